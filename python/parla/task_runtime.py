"""Compatibility module for Parla.py's ``parla.task_runtime``: the scheduler context its test fixtures use.

``Scheduler(n_threads)`` is a :class:`parla.Parla` context with that many workers;
``get_scheduler_context()`` is the active one. Parla.py's scheduler internals (its ``Task`` constructor with
resource dictionaries, the task-state classes, worker threads, resource pools) do not exist here."""
import logging
from typing import Any, Optional, Sequence

from ._runtime import Parla, current_runtime
from .tasks import get_current_devices, get_current_task

logger = logging.getLogger("parla.task_runtime")

__all__ = ["Scheduler", "get_scheduler_context", "get_current_devices", "get_current_task", "logger"]


class Scheduler(Parla):
    """A Parla context: ``Scheduler(4)`` or ``Scheduler(environments, n_threads=4)``."""

    def __init__(self, environments: Any = None, n_threads: Optional[int] = None, **options: Any) -> None:
        envs: Optional[Sequence[Any]] = environments
        if isinstance(environments, int) and not isinstance(environments, bool):
            envs, n_threads = None, environments
        super().__init__(n_threads, environments=envs, **options)

    @property
    def scheduler(self) -> "Parla":
        return self


def get_scheduler_context() -> Parla:
    """The active Parla context (Parla.py's scheduler context). Raises RuntimeError outside one."""
    return current_runtime()
