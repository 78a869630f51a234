"""The Parla context: starts the engine on entry, waits for every task on exit.

Only one context is active at a time in a process; spawning needs one.
"""
from __future__ import annotations

import os
from typing import Optional

from . import _core

__all__ = ["Parla", "current_runtime", "UnspawnedDependencyError", "TaskCancelledError"]


class UnspawnedDependencyError(RuntimeError):
    """Raised when a Parla context exits while spawned tasks wait on tasks that were never spawned.

    The message names the never-spawned tasks and the tasks that depend on them. Parla hangs in this case;
    this runtime cancels the waiting tasks and reports them instead.
    """


class TaskCancelledError(RuntimeError):
    """A task did not run because a task it depends on failed (``__cause__`` is that failure)."""


_current: Optional["Parla"] = None


def current_runtime() -> "Parla":
    """The active :class:`Parla` context. Raises RuntimeError outside one."""
    if _current is None:
        raise RuntimeError("no Parla runtime is active: spawn tasks inside a 'with Parla():' block")
    return _current


def _env_int(name: str) -> Optional[int]:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a positive integer") from None
    if value <= 0:
        raise ValueError(f"{name}={text!r} is not a positive integer")
    return value


class Parla:
    """Context manager that runs a Parla program.

    ``with Parla(n_workers=None):`` starts ``n_workers`` worker threads (default: the ``PARLA_NUM_THREADS``
    environment variable, else the number of cores). Leaving the block waits for every task, including
    tasks spawned by tasks, then:

    - re-raises the first exception raised by a task body, with a note naming the task; the exceptions of
      other failed tasks are attached as notes;
    - raises :class:`UnspawnedDependencyError` if spawned tasks depend on tasks that were never spawned
      (naming them), instead of hanging;
    - on Ctrl-C (KeyboardInterrupt) or any exception inside the block, cancels every task that has not
      started, waits for running bodies, stops the workers and lets the exception propagate.

    Contexts cannot be nested (RuntimeError).
    """

    def __init__(self, n_workers: Optional[int] = None, **options) -> None:
        if n_workers is not None and (not isinstance(n_workers, int) or n_workers <= 0):
            raise ValueError(f"Parla(n_workers={n_workers!r}): n_workers must be a positive integer")
        unknown = set(options) - {"virtual_gpus", "gpu_memory", "dev_config_file", "trace", "graph", "summary"}
        if unknown:
            raise TypeError(f"Parla() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        self.n_workers = n_workers
        self.options = options
        self._rt: Optional[_core.Runtime] = None

    @property
    def runtime(self) -> _core.Runtime:
        """The engine runtime of this context (``parla._core.Runtime``)."""
        if self._rt is None:
            raise RuntimeError("this Parla context is not active")
        return self._rt

    def __enter__(self) -> "Parla":
        global _current
        if _current is not None:
            raise RuntimeError("a Parla context is already active: Parla contexts cannot be nested")
        n = self.n_workers if self.n_workers is not None else (_env_int("PARLA_NUM_THREADS") or 0)
        self._rt = _core.Runtime(n)
        _current = self
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        global _current
        try:
            error = self._finish(cancel=exc_type is not None)
        finally:
            _current = None
        if error is not None and exc_type is None:
            raise error
        return False

    def _wait(self, rt: _core.Runtime):
        """Waits for all tasks in short slices, so Ctrl-C is handled while waiting."""
        while True:
            code, message = rt.wait_all(0.05)
            if code != _core.ETIMEDOUT:
                return code, message

    def _finish(self, cancel: bool) -> Optional[BaseException]:
        rt = self._rt
        if cancel:
            rt.cancel_all()
        try:
            code, message = self._wait(rt)
        except KeyboardInterrupt:
            rt.cancel_all()
            self._drain(rt)
            raise
        stuck = None
        if code == _core.ESTUCK:
            stuck = UnspawnedDependencyError(message)
            rt.cancel_all()
            self._drain(rt)
        failed = list(rt.failed)
        self._drain(rt)
        try:
            rt.close()
        except RuntimeError:
            # Tasks in a dependency cycle never finish and cannot be cancelled; the workers stay parked
            # (no CPU used) and the stuck error below says why.
            if stuck is None:
                raise
        self._rt = None
        if not failed:
            return stuck
        first = failed[0]
        error = first._exception
        error.add_note(f"raised by Parla task {first.name}")
        seen = {id(error)}
        for task in failed[1:]:
            if id(task._exception) not in seen:
                seen.add(id(task._exception))
                error.add_note(f"task {task.name} also failed: {task._exception!r}")
        if stuck is not None:
            error.add_note(str(stuck))
        return error

    @staticmethod
    def _drain(rt: _core.Runtime) -> None:
        while True:
            try:
                code, _ = rt.wait_all(0.05)
            except KeyboardInterrupt:
                continue
            if code != _core.ETIMEDOUT:
                return
            rt.cancel_all()
