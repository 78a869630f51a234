"""Compatibility module for ``parla.cython.device``: device and architecture types, the task environment
type, and streams. parla-experimental's ``PyDevice``/``PyArchitecture`` classes are this package's
:class:`~parla.devices.Device` and :class:`~parla.devices.Architecture`; its GPU environment is the
running task's :class:`~parla.tasks.TaskContext`."""
from ..devices import Architecture, Device
from ..environments import TaskEnvironment
from ..tasks import Stream, TaskContext

PyDevice = Device
PyArchitecture = Architecture
GPUEnvironment = TaskContext
CPUEnvironment = TaskContext

__all__ = ["Architecture", "Device", "PyDevice", "PyArchitecture", "TaskEnvironment", "GPUEnvironment",
           "CPUEnvironment", "Stream"]
