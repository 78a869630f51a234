"""Compatibility module for ``parla.parray.coherence`` (Parla.py) and ``parla.common.parray.coherence``
(parla-experimental): the names of the MSI states a PArray copy can be in, and the index Parla gives the
CPU's copy.

The runtime keeps coherence in its engine (per device and byte range); Parla's Python ``Coherence``
objects, their per-device state tables and their transition methods do not exist here. These constants let
programs name the states.
"""
__all__ = ["Coherence", "CPU_INDEX"]

CPU_INDEX = -1  # Parla's device index of the host copy (GPU i is i)


class Coherence:
    """The MSI states of a copy: ``INVALID`` (stale), ``SHARED`` (valid, others may be too), ``MODIFIED``
    (the only valid copy)."""

    INVALID = 0
    SHARED = 1
    MODIFIED = 2
