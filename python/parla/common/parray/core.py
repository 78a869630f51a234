"""Compatibility module for ``parla.common.parray.core``: the PArray type."""
from ...array import PArray

__all__ = ["PArray"]
