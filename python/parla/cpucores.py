"""Compatibility module for Parla.py's ``parla.cpucores``: ``cpu``, the CPU architecture (one device per core
with ``PARLA_CPU_ARCHITECTURE=cores``, see :mod:`parla.devices`)."""
from .devices import cpu

__all__ = ["cpu"]
