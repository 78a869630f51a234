"""Parla in C: a heterogeneous task-parallel runtime for scientific Python.

    from parla import Parla, spawn, TaskSpace
    from parla.devices import cpu

    with Parla():
        T = TaskSpace("T")
        @spawn(T[0], placement=cpu)
        def hello():
            print("Hello, World!")
"""
import os as _os

from ._runtime import DependencyCycleError, Parla, TaskCancelledError, UnspawnedDependencyError
from .tasks import (AtomicTaskSpace, Task, TaskList, Tasks, TaskSpace, get_current_context, get_current_devices,
                    get_current_stream, get_current_task, finish, spawn)
from .function_decorators import specialize, specialized
from .devices import get_all_devices
from .environments import TaskEnvironment
from .busywait import gpu_sleep_gil, gpu_sleep_nogil, sleep_gil, sleep_nogil
from .graphs import Graph, capture
from .waiting import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait
from . import array, devices, parray, tasks

from ._version import version as __version__  # written by the build from meson.build

# parla-experimental's default worker count: PARLA_NUM_THREADS, else the cores this process may use (a bad
# PARLA_NUM_THREADS is reported when a context starts).
_threads = _os.environ.get("PARLA_NUM_THREADS", "").strip()
parla_num_threads = int(_threads) if _threads.isdigit() and int(_threads) > 0 else devices._n_cores()

__all__ = [
    "Parla", "spawn", "TaskSpace", "Task", "TaskList", "get_current_task", "get_current_devices",
    "get_current_context", "get_current_stream", "TaskCancelledError", "UnspawnedDependencyError",
    "DependencyCycleError", "AtomicTaskSpace", "Tasks", "get_all_devices", "TaskEnvironment",
    "sleep_gil", "sleep_nogil", "gpu_sleep_gil", "gpu_sleep_nogil",
    "specialize", "specialized", "array", "devices", "parray", "tasks",
    "finish", "capture", "Graph", "wait", "as_completed", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED", "parla_num_threads",
]
