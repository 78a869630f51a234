"""Compatibility module for ``parla.common.parray.coherence``: see :mod:`parla.parray.coherence`."""
from ...parray.coherence import CPU_INDEX, Coherence

__all__ = ["Coherence", "CPU_INDEX"]
