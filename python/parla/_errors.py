"""The runtime's own exception types (re-exported by :mod:`parla`, :mod:`parla.tasks` and ``parla._runtime``).

The lowest module of the package: it imports nothing from it.
"""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["UnspawnedDependencyError", "DependencyCycleError", "TaskCancelledError", "unexpected_keywords"]


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



def unexpected_keywords(call: str, unknown: Iterable[str], known: Iterable[str]) -> TypeError:
    """The TypeError for keyword arguments that ``call`` (e.g. ``"spawn(T[0], ...)"``) does not take: it names
    each, with the nearest known keyword (difflib) when one is close, and lists the known ones."""
    known = sorted(known)
    parts = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    plural = "s" if len(parts) > 1 else ""
    return TypeError(f"{call} got unexpected keyword argument{plural} {', '.join(parts)}; its keywords are "
                     f"{', '.join(known)}")
