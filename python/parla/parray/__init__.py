"""Older Parla module layout: ``from parla.parray import asarray, asarray_batch``; ``parla.parray.coherence``
names the coherence states."""
from ..array import PArray, array, asarray, asarray_batch, clone_here, copy, get_array_module
from . import coherence

__all__ = ["PArray", "array", "asarray", "asarray_batch", "clone_here", "copy", "get_array_module", "coherence"]
