"""Compatibility package for ``parla.common.parray``: PArray and its constructors (see :mod:`parla.array`)."""
from ...array import PArray, array, asarray, asarray_batch
from . import coherence, core, from_data

__all__ = ["PArray", "array", "asarray", "asarray_batch", "coherence", "core", "from_data"]
