"""Compatibility module for ``parla.common.array``: array helpers (see :mod:`parla.array`)."""
from ..array import clone_here, copy, get_array_module

__all__ = ["clone_here", "copy", "get_array_module"]
