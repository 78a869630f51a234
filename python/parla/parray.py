"""Older Parla module layout: ``from parla.parray import asarray, asarray_batch``."""
from .array import PArray, array, asarray, asarray_batch, clone_here, copy, get_array_module

__all__ = ["PArray", "array", "asarray", "asarray_batch", "clone_here", "copy", "get_array_module"]
