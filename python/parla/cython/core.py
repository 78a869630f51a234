"""Compatibility module for ``parla.cython.core``: the busy waits (see :mod:`parla.busywait`).
parla-experimental's C++ binding classes (``PyInnerTask``, ``PyInnerScheduler``, ...) do not exist."""
from ..busywait import gpu_sleep_gil, gpu_sleep_nogil, sleep_gil, sleep_nogil

cpu_bsleep_gil = sleep_gil
cpu_bsleep_nogil = sleep_nogil
gpu_bsleep_gil = gpu_sleep_gil
gpu_bsleep_nogil = gpu_sleep_nogil

__all__ = ["cpu_bsleep_gil", "cpu_bsleep_nogil", "gpu_bsleep_gil", "gpu_bsleep_nogil"]
