"""Graph capture and replay: record the tasks of one iteration once, then replay them many times.

    from parla import Parla, TaskSpace, capture, spawn
    from parla.array import asarray

    with Parla():
        bands = [asarray(np.zeros(1000)) for _ in range(8)]
        T = TaskSpace("T")
        with capture("step") as step:          # the spawns made here run as usual, and are recorded
            for p, band in enumerate(bands):
                @spawn(T[p], inout=[band])
                def work():
                    band.array[:] += 1
        for _ in range(99):
            step.replay()                      # the same 8 tasks again, in one call into the engine
        step.wait()                            # or leave the context; every band is now 100

What a capture records, per task spawned in its ``with`` block by the thread that opened it (tasks that task
bodies spawn are not recorded: they are spawned again when the bodies run again): the body with its
closure (as captured by value at that spawn), placement options, vcus, memory, priority, the declared
``input``/``output``/``inout`` arrays and the explicit dependencies. A dependency on a task recorded in the
same capture becomes a dependency on that task's replay; one on any other task stays a dependency on that
very task in every replay (once it has finished it orders nothing). Async bodies cannot be recorded
(TypeError at the end of the capture).

What a replay does: :meth:`Graph.replay` creates and submits one new task per recorded task, in recording
order, in one call into the C engine with the GIL released: there is no Python code per task on the
spawning side (Python bodies still take the GIL to run, as every Python body does; native bodies,
:mod:`parla.native`, are called without it). It checks nothing that
cannot change (placements were checked at capture) and refuses what can: a PArray of the graph replaced by
``update()`` since the capture, a graph whose earlier replay failed, a context that has exited. Replays are
ordered like spawns, by their declared data: replay k + 1 may start where the data of replay k allows (a
task of replay k + 1 that writes what a task of replay k reads waits for it), so an iteration needs no
barrier between replays.

Names. TaskSpace entries keep the tasks of the capture itself (``T[0]`` above is the captured run's
task); replays do not touch TaskSpaces and their tasks are not named there. Inside a replayed body
``get_current_task()`` gives a Task named ``"T[0] (replay of graph 'step')"`` with the captured task's
declarations and the replay's devices; its result is dropped when the body returns. Each replay returns
its join task, named ``"step#replay<k>"`` (k from 1): it finishes after every task of that replay and of
the replays before it, so ``replay().wait()``, ``await g.replay()`` and :meth:`Graph.wait` wait for them.

Failures. A replayed body that raises is a failed task like any other (listed in ``Parla.failed``; the
context exit raises it); its replay's join fails too, and the graph replays no more: :meth:`Graph.replay`
and :meth:`Graph.wait` raise RuntimeError naming the graph and the task.

Thread context: a graph is captured and replayed by any one thread at a time (replays from several threads
are serialised); a replay may be issued from inside a task body (then ``await g.replay()`` frees the worker
until the replay has finished).
"""
from __future__ import annotations

from typing import Any, Iterator, List, Literal, Optional, Tuple

from . import _context, _core
from . import array as _array
from .array import PArray

__all__ = ["Graph", "capture"]


def _arrays(declaration: Any) -> Iterator[PArray]:
    """The PArrays of an input/output/inout declaration (a PArray, (PArray, k), or nested lists of them)."""
    if isinstance(declaration, PArray):
        yield declaration
    elif isinstance(declaration, (list, tuple)):
        for item in declaration:
            yield from _arrays(item)


class Graph:
    """A recorded graph of tasks (see the module documentation). Made by :func:`capture`; usable as the
    ``with`` block that records it (once). Attributes: ``name``, ``tasks`` (how many were recorded),
    ``replays`` (how many replays were issued)."""

    def __init__(self, name: Optional[str] = None) -> None:
        context = _context.current_runtime()
        self._context = context
        self._core = _core.Graph(context.runtime, name if name is not None else "graph")
        self._roots: List[Tuple[PArray, int, str]] = []  # (root PArray, its generation, first task using it)
        # parla.array._updates when every root was last seen at its recorded generation (-1: not yet): while
        # it has not moved, no root was replaced, and a replay skips the loop over them.
        self._checked = -1
        self._last: Optional[Any] = None  # the latest replay's join task

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def tasks(self) -> int:
        return self._core.tasks

    @property
    def replays(self) -> int:
        return self._core.replays

    def __enter__(self) -> "Graph":
        if _context.current is not self._context:
            raise RuntimeError(f"graph {self.name!r} belongs to a Parla context that is not active")
        self._core._begin()
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> Literal[False]:
        self._core._end()
        if exc is not None:
            self._core.broken = exc  # the iteration failed while recording: the graph is not usable
            return False
        broken = self._core.broken
        if broken is not None:
            raise RuntimeError(f"graph {self.name!r}: capture failed: {broken}") from broken
        seen = set()
        self._checked = _array._updates  # read before the generations: an update() meanwhile moves it
        for task in self._core._templates():
            for declaration in getattr(task, "_decl", ()):
                for array in _arrays(declaration):
                    root = array._root if array._root is not None else array
                    if id(root) not in seen:
                        seen.add(id(root))
                        self._roots.append((root, root._generation, task.name))
        return False

    def replay(self) -> Any:
        """Replays the recorded tasks once (see the module documentation) and returns the replay's join task
        (a :class:`parla.Task`: ``wait()``, ``await``). Raises RuntimeError, naming the graph and the task,
        when a PArray of the graph was replaced by ``update()`` since the capture, when an earlier replay
        failed, outside the graph's Parla context, or while it is being captured. Cost: about 1 µs of CPU per
        task with data accesses (1.3 measured on a quiet 2-core machine for the Jacobi benchmark), about 0.15
        without (docs/performance.md); checking the graph's arrays costs one comparison unless some PArray
        was updated since the last replay. GIL released while the engine creates the tasks; any thread."""
        if _context.current is not self._context:
            raise RuntimeError(f"graph {self.name!r} belongs to a Parla context that has exited or is not "
                               f"active; capture it again in the active one")
        self._raise_failure()
        updates = _array._updates
        if updates != self._checked:  # some PArray was replaced since the last check: one of the graph's?
            for root, generation, task_name in self._roots:
                if root._generation != generation:
                    raise RuntimeError(f"graph {self.name!r}: {root._describe()}, which its task {task_name} "
                                       f"uses, was replaced by update() since the capture; a replay would use "
                                       f"the old array: capture the graph again")
            self._checked = updates  # read before the loop: an update() during it is seen next time
        self._last = self._core._replay()
        return self._last

    def wait(self, timeout: Optional[float] = None) -> None:
        """Blocks until every replay issued so far has finished; raises RuntimeError (naming the graph and
        the task) when one failed, TimeoutError when ``timeout`` seconds (None: no limit) run out. GIL
        released while waiting; any thread (inside a task body it runs other tasks meanwhile)."""
        last = self._last
        if last is not None:
            last.wait(timeout)
        self._raise_failure()

    def _raise_failure(self) -> None:
        error = self._core.error
        if error is not None:
            task_name, exc = error
            raise RuntimeError(f"graph {self.name!r}: a replay failed: task {task_name} raised "
                               f"{type(exc).__name__}: {exc}; a failed graph is not replayed again") from exc
        last = self._last
        if last is not None and last.done and last.state == "failed":
            raise RuntimeError(f"graph {self.name!r}: {last.exception}") from last.exception

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {self.tasks} tasks, {self.replays} replays>"


def capture(name: Optional[str] = None) -> Graph:
    """``with capture("name") as g:`` records the tasks spawned in the block (which also run, as usual) into
    the :class:`Graph` ``g``, for ``g.replay()``. Inside a Parla context only (RuntimeError otherwise);
    captures do not nest."""
    return Graph(name)
