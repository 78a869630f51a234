"""Compatibility module for ``parla.common.globals``: what a running task can ask about itself, CuPy if it
is importable, and the device-type numbers parla-experimental's programs compare.

parla-experimental's scheduler singletons (``get_scheduler``, ``get_device_manager``, ``_Locals``, stream
pools, the logging and mapping-policy enums) are internals of its scheduler and do not exist here."""
import enum

from .._cuda import cupy_or_none as _cupy_or_none
from ..tasks import get_current_context, get_current_devices, get_current_stream, get_current_task

cupy = _cupy_or_none()
CUPY_ENABLED = cupy is not None


class DeviceType(enum.IntEnum):
    """Device kinds as parla-experimental numbers them."""
    INVALID = -2
    ANY = -1
    CPU = 0
    GPU = 1
    CUDA = 1


class AccessMode(enum.IntEnum):
    """How a task declares a PArray: ``input=``, ``output=``, ``inout=``."""
    IN = 0
    OUT = 1
    INOUT = 2


__all__ = ["get_current_task", "get_current_devices", "get_current_stream", "get_current_context", "cupy",
           "CUPY_ENABLED", "DeviceType", "AccessMode"]
