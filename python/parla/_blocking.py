"""Blocking until tasks finish: the primitive under ``Task.wait``, :func:`parla.wait`, ``as_completed`` and
``await`` from asyncio coroutines.

Waits release the GIL (in ``parla._core.wait_any``). On the main thread a wait wakes at least every
``_SLICE`` seconds so that Ctrl-C interrupts it (KeyboardInterrupt); in a task body the worker runs other
tasks meanwhile. Duck-typed on tasks (``done``, ``state``, ``name``, ``runtime``), so it sits below
:mod:`parla.tasks`.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Optional, Sequence

from . import _core
from ._errors import DependencyCycleError, UnspawnedDependencyError

__all__ = ["block", "wait_all", "wait_task", "seconds", "running_loop", "until_done_in_asyncio"]

_SLICE = 0.1  # seconds: how long the main thread blocks before it lets Python handle signals
_POLL = 0.01  # seconds between looks at never-spawned tasks that a wait with a timeout waits for


def _stuck(message: str, pending: Sequence[Any]) -> RuntimeError:
    """The error for a wait that can never end: UnspawnedDependencyError when the tasks waited for, or tasks
    they depend on, were never spawned (as at the context's exit), else DependencyCycleError."""
    names = ", ".join(t.name for t in pending[:8]) + (" ..." if len(pending) > 8 else "")
    if all(t.state == "created" for t in pending):
        return UnspawnedDependencyError(f"cannot wait for {names}: never spawned")
    # The engine speaks of submitting; in Python, tasks are spawned.
    text = f"cannot wait for {names}: {message.replace('submitted', 'spawned')}"
    if _unspawned_involved(pending):
        return UnspawnedDependencyError(text)
    return DependencyCycleError(text)


def _unspawned_involved(pending: Sequence[Any]) -> bool:
    """Whether the tasks waited for were never spawned, or wait on tasks that were never spawned."""
    return all(t.state == "created" for t in pending) or \
        any(_has_unspawned(runtime) for runtime in {id(t.runtime): t.runtime for t in pending}.values())


def _has_unspawned(runtime: Any) -> bool:
    try:
        return bool(runtime.unsubmitted())
    except RuntimeError:  # the runtime has closed meanwhile
        return False


def block(pending: Sequence[Any], deadline: Optional[float]) -> bool:
    """Blocks until one of pending (unfinished tasks) has finished (True) or the deadline (time.monotonic())
    has passed (False). Raises UnspawnedDependencyError when the pending tasks were never spawned or wait on
    tasks never spawned (at once without a deadline, else once it has passed: another thread may still spawn
    them), DependencyCycleError when none can ever finish, ValueError for an engine refusal."""
    main = threading.current_thread() is threading.main_thread()
    while True:
        if any(t.done for t in pending):
            return True
        if deadline is None:
            budget = _SLICE if main else -1.0
        else:
            budget = deadline - time.monotonic()
            if budget <= 0:
                return False
            if main:
                budget = min(budget, _SLICE)
        by_runtime = pending
        runtime = pending[0].runtime
        if any(t.runtime is not runtime for t in pending):
            by_runtime = [t for t in pending if t.runtime is runtime]
            budget = min(budget, _SLICE) if budget >= 0 else _SLICE  # tasks of several runtimes: take turns
        code, message = _core.wait_any(by_runtime, budget)
        if code == 0 or code == _core.ETIMEDOUT:
            continue
        if code == _core.ESTUCK:
            # Never-spawned tasks may still be spawned by another thread (or, inside a body, by the main
            # thread): a wait given a timeout waits for that until its deadline; without one it cannot wait
            # for ever on that chance, and says why at once.
            if deadline is not None and _unspawned_involved(pending):
                left = deadline - time.monotonic()
                if left > 0:
                    time.sleep(min(_POLL, left))
                    if any(t.done for t in pending) or deadline > time.monotonic():
                        continue
            raise _stuck(message, pending)
        raise ValueError(message)


def wait_task(task: Any, timeout: Optional[float] = None) -> None:
    """Body of :meth:`parla.Task.wait`: raises TimeoutError when timeout (seconds) runs out."""
    limit = None if timeout is None else seconds(timeout, f"task {task.name}.wait")  # checked even when done
    if task.done:
        return
    deadline = None if limit is None else time.monotonic() + limit
    if not block([task], deadline):
        raise TimeoutError(f"task {task.name} did not finish within {timeout} s (state {task.state})")


def seconds(timeout: float, what: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"{what}(timeout={timeout!r}): timeout must be a number of seconds >= 0 or None")
    return float(timeout)


def wait_all(tasks: Sequence[Any]) -> None:
    """Blocks until every task of tasks has finished (done, failed or cancelled)."""
    pending = [t for t in tasks if not t.done]
    while pending:
        block(pending, None)
        pending = [t for t in pending if not t.done]


def running_loop() -> Any:
    """The asyncio event loop running in this thread, or None. A running loop means asyncio has been imported,
    so it is looked up, not imported: importing asyncio would cost every program that never uses it."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def until_done_in_asyncio(tasks: Sequence[Any]) -> None:
    """In an asyncio coroutine: waits for every task without blocking the event loop. A daemon thread blocks
    in the engine (GIL released) and wakes the loop through ``call_soon_threadsafe``."""
    loop = running_loop()
    if loop is None:
        raise RuntimeError(f"'await' on Parla tasks ({', '.join(t.name for t in tasks[:4])}) outside a task body "
                           f"needs a running asyncio event loop (or use task.wait())")
    future = loop.create_future()

    def settle(error: Optional[BaseException]) -> None:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def watch() -> None:
        error: Optional[BaseException] = None
        try:
            wait_all(tasks)
        except BaseException as e:  # handed to the awaiting coroutine
            error = e
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:  # the loop was closed meanwhile: nobody awaits any more
            pass

    threading.Thread(target=watch, name="parla-await", daemon=True).start()
    await future
