"""Compatibility module for ``parla.common.parray.from_data``: PArray constructors."""
from ...array import array, asarray, asarray_batch

__all__ = ["array", "asarray", "asarray_batch"]
