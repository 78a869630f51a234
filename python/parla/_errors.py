"""The runtime's own exception types (re-exported by :mod:`parla`, :mod:`parla.tasks` and ``parla._runtime``).

The lowest module of the package: it imports nothing from it.
"""
from __future__ import annotations

__all__ = ["UnspawnedDependencyError", "DependencyCycleError", "TaskCancelledError"]


class UnspawnedDependencyError(RuntimeError):
    """Raised when a Parla context exits while spawned tasks wait on tasks that were never spawned.

    The message names the never-spawned tasks and the tasks that depend on them. Parla hangs in this case;
    this runtime cancels the waiting tasks and reports them instead.
    """


class DependencyCycleError(RuntimeError):
    """Raised when a Parla context exits while spawned tasks wait on each other in a cycle (explicit
    dependencies, data hazards or awaits). The waiting tasks are cancelled (they never run) and the
    runtime's workers end with the context."""


class TaskCancelledError(RuntimeError):
    """A task did not run because a task it depends on failed (``__cause__`` is that failure)."""

