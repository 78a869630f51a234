"""Compatibility module for ``parla.cython.tasks``: tasks, task spaces and collections, and ``wait``.

parla-experimental's task class hierarchy (``ComputeTask``, ``DataMovementTask``, the task-state classes,
``inner_task`` and the dependency bookkeeping methods used by its scheduler tests) does not exist here: a
task is :class:`parla.tasks.Task`, whose ``state`` is a string."""
from ..tasks import (AtomicTaskList, AtomicTaskSpace, BackendTaskSpace, Task, TaskContext, TaskList, TaskSpace,
                     Tasks, barrier)

wait = barrier  # parla-experimental's wait(barrier): blocks until every task in it has finished

TaskCollection = Tasks
GPUEnvironment = TaskContext
CPUEnvironment = TaskContext

__all__ = ["Task", "TaskSpace", "AtomicTaskSpace", "BackendTaskSpace", "TaskList", "AtomicTaskList", "Tasks",
           "TaskCollection", "GPUEnvironment", "CPUEnvironment", "wait"]
