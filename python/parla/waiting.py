"""Waiting for tasks from outside task bodies, in the style of :mod:`concurrent.futures`.

    import parla
    from parla import Parla, spawn, TaskSpace

    with Parla():
        T = TaskSpace("T")
        for i in range(4):
            @spawn(T[i])
            def work():
                return i * i
        done, not_done = parla.wait(T.tasks, timeout=10, return_when=parla.FIRST_COMPLETED)
        for task in parla.as_completed(T.tasks):
            print(task.name, task.result)

Every wait here works from the main thread and from other threads (and, without a timeout, from inside task
bodies, where the worker runs other tasks meanwhile). The GIL is released while waiting; on the main thread
the wait wakes at least every 0.1 s, so Ctrl-C interrupts it (KeyboardInterrupt). A wait that runs past its
timeout raises :class:`TimeoutError` (the tasks keep running). Inside ``async def`` task bodies and asyncio
coroutines use ``await task`` instead.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Iterator, List, NamedTuple, Optional, Set

from . import _blocking
from ._blocking import wait_task as wait_task  # the body of Task.wait, also reachable here
from .tasks import Task, TaskSpace

__all__ = ["wait", "as_completed", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED", "DoneAndNotDoneTasks"]

# The same values as concurrent.futures, so either module's constants work.
FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"

class DoneAndNotDoneTasks(NamedTuple):
    """What :func:`wait` returns: the finished tasks (done, failed or cancelled) and the others."""
    done: Set[Task]
    not_done: Set[Task]


def _tasks(tasks: Iterable[Task], what: str) -> List[Task]:
    """The tasks named by tasks (a task, a TaskSpace, or nested iterables of them; None entries are skipped).
    Raises TypeError naming what for anything else: a string would otherwise be iterated character by
    character without end, and a number would give Python's "object is not iterable"."""
    out: List[Task] = []
    stack: List[Iterator[Any]] = [iter((tasks,))]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, Task):
            out.append(item)
        elif item is None:
            continue
        elif isinstance(item, TaskSpace):
            stack.append(iter(item.tasks))
        elif isinstance(item, (str, bytes)) or not isinstance(item, Iterable):
            raise TypeError(f"{what}: expected Parla tasks, TaskSpaces or iterables of them, got a "
                            f"{type(item).__name__} ({item!r:.60})")
        else:
            stack.append(iter(item))
    return out


_END = object()


def wait(tasks: Iterable[Task], timeout: Optional[float] = None,
         return_when: str = ALL_COMPLETED) -> DoneAndNotDoneTasks:
    """Waits for tasks, like :func:`concurrent.futures.wait`.

    - ``tasks``: tasks, a TaskSpace or a slice of one (nested iterables are flattened).
    - ``timeout``: seconds (float); None waits without limit. When it runs out, ``wait`` returns what has
      finished so far (it does not raise, as in concurrent.futures).
    - ``return_when``: ``FIRST_COMPLETED`` (one task finished), ``FIRST_EXCEPTION`` (one task failed or was
      cancelled, else all finished) or ``ALL_COMPLETED`` (default).

    Returns ``(done, not_done)``, two sets of tasks; finished means done, failed or cancelled (read
    ``task.result`` or ``task.exception``). Raises ValueError for an unknown ``return_when``;
    UnspawnedDependencyError when every unfinished task was never spawned, DependencyCycleError when none can
    ever finish. Thread context: any thread, task bodies included.
    """
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise ValueError(f"wait(return_when={return_when!r}): expected FIRST_COMPLETED, FIRST_EXCEPTION or "
                         f"ALL_COMPLETED")
    items = _tasks(tasks, "wait()")
    deadline = None if timeout is None else time.monotonic() + _blocking.seconds(timeout, "wait")
    while True:
        done = {t for t in items if t.done}
        pending = [t for t in items if not t.done]
        if not pending or (return_when == FIRST_COMPLETED and done) or \
                (return_when == FIRST_EXCEPTION and any(t.state in ("failed", "cancelled") for t in done)):
            break
        if not _blocking.block(pending, deadline):
            break
    done = {t for t in items if t.done}
    return DoneAndNotDoneTasks(done, set(items) - done)


def as_completed(tasks: Iterable[Task], timeout: Optional[float] = None) -> Iterator[Task]:
    """Yields each task as it finishes (done, failed or cancelled), like :func:`concurrent.futures.as_completed`;
    tasks finished already come first. ``timeout`` (seconds, from the call) raises :class:`TimeoutError` naming
    the unfinished tasks when it runs out. Duplicates are yielded once."""
    items = list(dict.fromkeys(_tasks(tasks, "as_completed()")))
    deadline = None if timeout is None else time.monotonic() + _blocking.seconds(timeout, "as_completed")
    pending = items
    while pending:
        finished = [t for t in pending if t.done]
        pending = [t for t in pending if not t.done]
        yield from finished
        if pending and not _blocking.block(pending, deadline):
            raise TimeoutError(f"as_completed: {len(pending)} of {len(items)} tasks unfinished after {timeout} s "
                               f"({', '.join(t.name for t in pending[:8])}{' ...' if len(pending) > 8 else ''})")


