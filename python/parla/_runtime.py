"""The Parla context: starts the engine on entry, waits for every task on exit.

Only one context is active at a time in a process; spawning needs one.
"""
from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple, Type, Union

from . import _blas, _blocking, _config, _context, _core, _switching
from ._config import parse_size as parse_size  # where it was defined before _config
from ._context import current_runtime
from ._errors import DependencyCycleError, TaskCancelledError, UnspawnedDependencyError, unexpected_keywords
from ._logging import configure as _configure_logging, data_logger, logger, trace_logger
from .progress import _from_env as _progress_from_env, _Monitor as _ProgressMonitor

__all__ = ["Parla", "current_runtime", "UnspawnedDependencyError", "DependencyCycleError", "TaskCancelledError"]


def _live_tasks(rt: Any, states: Any) -> List[Any]:
    """The Task objects of runtime rt whose state is in states (the engine keeps no list of spawned tasks, so
    this looks through the live engine task objects, ``parla._core.Task``, those the cycle collector lists and
    the spawned ones it does not list until they finish: for error paths only)."""
    tracked = [o for o in gc.get_objects() if isinstance(o, _core.Task) and o.runtime is rt]
    return [o for o in tracked + rt._pending() if o.state in states]


def _unfinished_tasks(rt: Any) -> List[Any]:
    """The Task objects of runtime rt that are spawned and waiting (submitted, ready or suspended)."""
    return _live_tasks(rt, ("submitted", "ready", "suspended"))


def _waiting_tasks(waiting: List[Any], limit: int = 8) -> str:
    """Names of the waiting tasks (from _unfinished_tasks), with their explicit dependencies (for the diagnosis
    of a cycle)."""
    if not waiting:
        return ""
    waiting.sort(key=lambda t: t.name)
    parts = []
    for t in waiting[:limit]:
        deps = [d.name for d in t.dependencies if not d.done]
        parts.append(f"{t.name} (waiting on {', '.join(deps)})" if deps else t.name)
    more = f" and {len(waiting) - limit} more" if len(waiting) > limit else ""
    cycle = _find_cycle(waiting)
    named = f". The cycle: {' -> '.join(t.name for t in cycle)}" if cycle else ""
    return f"{named}. Waiting: {'; '.join(parts)}{more}"


def _find_cycle(waiting: List[Any], limit: int = 64) -> List[Any]:
    """A cycle of explicit dependencies among the waiting tasks, as [t0, t1, ..., t0] (each waits on the
    next), or [] when their waits go through data hazards or awaits only (which the Task objects do not
    show). At most limit tasks are named."""
    ids = {id(t): t for t in waiting}
    colour: Dict[int, int] = {}  # 1: on the current path, 2: explored
    for root in waiting:
        if id(root) in colour:
            continue
        path = [root]
        iters = [iter(root.dependencies)]
        colour[id(root)] = 1
        while iters:
            dep = next(iters[-1], None)
            if dep is None:
                colour[id(path.pop())] = 2
                iters.pop()
                continue
            if id(dep) not in ids:
                continue
            state = colour.get(id(dep))
            if state == 1:
                cycle = path[[id(t) for t in path].index(id(dep)):] + [dep]
                return cycle if len(cycle) <= limit else cycle[:limit] + [dep]
            if state is None:
                colour[id(dep)] = 1
                path.append(dep)
                iters.append(iter(dep.dependencies))
    return []


def _after_fork_in_child() -> None:
    """os.fork() inside a context: in the child, the engine's workers do not exist and its locks may be held
    by threads that are gone. The context and its runtime are marked so that every later use raises a clear
    RuntimeError (leaving the block included) instead of hanging, and the engine is never touched."""
    context = _context.current
    if context is not None and context._rt is not None:
        context._rt._after_fork_child()
        context._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _unfinished_report(rt: Any, limit: int = 8) -> str:
    """': N tasks unfinished: T[0] (running), ...' for runtime rt (from the live Task objects)."""
    tasks = _live_tasks(rt, ("submitted", "ready", "running", "suspended", "runahead"))
    if not tasks:
        return ": no task is unfinished"
    tasks.sort(key=lambda t: (t.state != "running", t.name))
    shown = ", ".join(f"{t.name} ({t.state})" for t in tasks[:limit])
    more = f" and {len(tasks) - limit} more" if len(tasks) > limit else ""
    return f": {len(tasks)} task{'s' if len(tasks) != 1 else ''} unfinished: {shown}{more}"


_MAX_FAILURE_NOTES = 50  # notes naming other failed tasks on the re-raised exception; the rest are counted


class _Notes:
    """The notes a context's exit adds to the exception it re-raises. Notes an earlier context added to the
    same object (an exception instance raised again, in another context) are removed first, so they do not
    pile up (the exception remembers them in its ``_parla_notes`` attribute)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        old = getattr(error, "_parla_notes", None)
        notes = getattr(error, "__notes__", None)
        if old and isinstance(notes, list):
            for note in old:
                try:
                    notes.remove(note)
                except ValueError:
                    pass
        self.added: List[str] = []
        try:
            setattr(error, "_parla_notes", self.added)
        except (AttributeError, TypeError):  # an exception type without attributes: notes may repeat
            pass

    def add(self, note: str) -> None:
        self.error.add_note(note)
        self.added.append(note)


def _describe(exc: BaseException) -> str:
    """repr(exc), or its type's name when its repr raises."""
    try:
        return repr(exc)
    except Exception:
        return f"{type(exc).__name__} (its repr failed)"


class Parla:
    """Context manager that runs a Parla program.

    ``with Parla(n_workers=None):`` starts ``n_workers`` worker threads (default: the ``PARLA_NUM_THREADS``
    environment variable, else the number of cores). Leaving the block waits for every task, including
    tasks spawned by tasks, then:

    - re-raises the first exception raised by a task body, with a note naming the task; the exceptions of
      up to 50 other failed tasks are attached as notes (then a count); ``self.failed`` lists every failed
      task. Notes added by an earlier context to the same exception object are replaced, not repeated;
    - raises :class:`UnspawnedDependencyError` if spawned tasks depend on tasks that were never spawned
      (naming them), instead of hanging;
    - on Ctrl-C (KeyboardInterrupt) or any exception inside the block, cancels every task that has not
      started, waits for running bodies, stops the workers and lets the exception propagate.

    Contexts cannot be nested (RuntimeError).

    ``Parla(environments)`` or ``environments=``: Parla.py's task environments (see
    :mod:`parla.environments`), entered around the bodies of tasks on their devices.

    Devices: ``virtual_gpus=N`` (and ``gpu_memory`` bytes or a size string each) adds N virtual GPUs: devices of
    the ``gpu`` architecture whose memory is host memory with that capacity, for running and testing GPU
    placements and data movement without a GPU. The same comes from ``PARLA_VIRTUAL_GPUS=N`` or ``N:SIZE``
    (e.g. ``4:256MiB``), or from Parla's ``dev_config_file`` YAML. Without virtual GPUs, CUDA GPUs found at run
    time are the ``gpu`` architecture.

    PArray access checking: ``strict_access=True`` (or ``PARLA_STRICT_ACCESS=1``) is a debugging mode in which a
    task may use only the PArrays it declared (and those it made itself); by default undeclared uses are
    allowed where their values are current (see ``parla.array``).

    Tracing: ``trace="run.json"`` (or ``PARLA_TRACE=run.json``, or parla-experimental's ``logfile=``) writes a
    Chrome trace at exit (open it in
    https://ui.perfetto.dev or chrome://tracing): a track per worker and per device with tasks, copies and
    evictions, dependencies as arrows, mapping scores in each task's args. ``graph="run.dot"`` writes the task
    graph (Graphviz DOT). ``summary=True`` prints a text summary at exit (tasks and busy % per device, bytes
    moved, evictions, the critical path); it is also kept in ``self.summary``; ``summary_file="run.txt"`` writes
    it to that file instead of printing it. Off by default; off, it costs
    nothing measurable.

    Progress: ``progress=True`` (or ``PARLA_PROGRESS=1``) shows a tqdm bar of tasks finished over spawned on runs
    longer than a tenth of a second; ``progress=callback`` calls ``callback(parla.progress.Progress)`` about ten times
    a second from a background thread instead.

    BLAS threads: ``blas_threads=1`` (default; or ``PARLA_BLAS_THREADS``) sets every BLAS library loaded when
    the context starts (NumPy's and SciPy's OpenBLAS, MKL) to that many threads through threadpoolctl, and
    restores the previous counts at exit: parallelism comes from the tasks. ``blas_threads=None`` (or
    ``PARLA_BLAS_THREADS=none``) leaves them alone.

    GIL hand-over: ``switch_interval=1e-4`` (default; or ``PARLA_SWITCH_INTERVAL``) lowers the interpreter's
    switch interval (``sys.setswitchinterval``, 5 ms by default) to that many seconds while the context is open
    and restores it at exit, so that a worker whose GIL-releasing kernel returned gets the GIL back from a
    thread running Python (the one spawning tasks) within that time rather than 5 ms. ``switch_interval=None``
    (or ``PARLA_SWITCH_INTERVAL=none``) leaves it alone; a shorter interval set by the program is kept.

    CUDA memory: host buffers of PArrays that take part in GPU copies are pinned (registered with the driver,
    once per buffer, until the array is freed) so copies do not block; ``pin_host_memory=False`` (or
    ``PARLA_PIN_HOST_MEMORY=0``) leaves them pageable. Device memory comes from the runtime's caching pool
    (over the driver's stream-ordered pool); ``memory_pool=False`` (or ``PARLA_MEMORY_POOL=0``) allocates and
    frees each buffer with the driver instead. See the user guide's GPU section.

    ``async with Parla():`` inside an asyncio coroutine waits for the tasks at exit without blocking the loop.
    """

    if TYPE_CHECKING:  # the keywords __init__ accepts (it checks them at run time), for type checkers
        def __init__(self, n_workers: Union[int, Sequence[Any], None] = None, *,
                     virtual_gpus: Optional[int] = None, gpu_memory: Union[int, str, None] = None,
                     dev_config_file: Optional[str] = None, trace: Optional[str] = None,
                     graph: Optional[str] = None, summary: bool = False, summary_file: Optional[str] = None,
                     progress: Union[bool, Callable[[Any], Any], None] = None,
                     strict_access: Optional[bool] = None, logfile: Optional[str] = None,
                     blas_threads: Optional[int] = 1, environments: Optional[Sequence[Any]] = None,
                     pin_host_memory: Optional[bool] = None, memory_pool: Optional[bool] = None,
                     switch_interval: Optional[float] = _switching.DEFAULT) -> None: ...
    else:
        def __init__(self, n_workers: Optional[int] = None, **options) -> None:
            self._init(n_workers, **options)

    def _init(self, n_workers: Any = None, **options: Any) -> None:
        environments = options.pop("environments", None)
        if isinstance(n_workers, (list, tuple)):  # Parla.py: Parla(environments)
            environments, n_workers = n_workers, None
        if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers <= 0):
            raise ValueError(f"Parla(n_workers={n_workers!r}): n_workers must be a positive integer")
        known = {"virtual_gpus", "gpu_memory", "dev_config_file", "trace", "graph", "summary", "summary_file",
                 "progress", "strict_access", "logfile", "blas_threads", "pin_host_memory", "memory_pool",
                 "switch_interval"}
        unknown = set(options) - known
        if unknown:
            raise unexpected_keywords("Parla()", unknown, known | {"n_workers", "environments"})
        for key in ("logfile", "trace", "graph", "summary_file"):  # None, False or "": not written
            value = options.get(key)
            if value is not None and value is not False and not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"Parla({key}={value!r}): {key} is a file path")
        self.n_workers = n_workers
        self.options = options
        self._forked = False
        # Parla.py's task environments (parla.environments.TaskEnvironment), entered around task bodies.
        self.environments: List[Any] = list(environments or ())
        self._environment_registry: Any = None
        strict = options.get("strict_access")
        if strict is None:
            strict = _config.env_switch("PARLA_STRICT_ACCESS")  # "off" meant on, "maybe" passed
        # Debugging mode: a task may use only the PArrays it declared (see the user guide, PArrays).
        self.strict_access = bool(strict)
        self._rt: Optional[_core.Runtime] = None
        self._progress: Any = None  # a parla.progress._Monitor while active with progress on
        self._blas: Any = None  # what restores the BLAS thread counts at exit
        self._switching: Any = None  # what restores the interpreter's switch interval at exit
        self._switch_interval = _switching.resolve(options.get("switch_interval", _switching._UNSET))
        progress = options.get("progress")
        if progress is not None and not isinstance(progress, bool) and not callable(progress):
            raise TypeError(f"Parla(progress={progress!r}): expected True, False or a callable taking a "
                            f"parla.progress.Progress")
        self.device_table: List[Dict[str, Any]] = []
        self.has_cuda = False
        self._placement_cache: Dict[Any, Any] = {}
        # PArrays used in this context, by id (a WeakSet would compare PArrays with ==, which is elementwise).
        self._parrays: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
        self._thread = 0  # the thread that entered the context (threading.get_ident()), and its name
        self._thread_name = ""

    @property
    def runtime(self) -> _core.Runtime:
        """The engine runtime of this context (``parla._core.Runtime``)."""
        if self._rt is None:
            raise RuntimeError("this Parla context is not active (it has exited, or was never entered)")
        return self._rt

    def __enter__(self) -> "Parla":
        active = _context.current
        if active is not None:
            if active._thread == threading.get_ident():
                raise RuntimeError("a Parla context is already active: Parla contexts cannot be nested")
            raise RuntimeError(
                f"a Parla context is already active in this process, entered on thread {active._thread_name!r}: "
                f"one context runs at a time per process (every thread spawns into it); enter this one after "
                f"that one exits, or spawn into it from this thread")
        _configure_logging()
        n, config = _config.engine_settings(self.n_workers, self.options)
        self.trace_path = self.options.get("trace") or self.options.get("logfile") or \
            os.environ.get("PARLA_TRACE") or None
        self.graph_path = self.options.get("graph") or None
        self.summary: Optional[str] = None
        self.summary_path: Optional[str] = self.options.get("summary_file") or None
        tracing = bool(self.trace_path or self.graph_path or self.options.get("summary") or self.summary_path)
        blas_threads = _blas.resolve(self.options.get("blas_threads", _blas._UNSET))
        self._blas = _blas.limit(blas_threads)
        try:
            self._rt = _core.Runtime(n, trace=tracing, **config)
        except BaseException:
            blas, self._blas = self._blas, None
            _blas.restore(blas)
            raise
        self._switching = _switching.lower(self._switch_interval)
        self.device_table = self._rt.devices()
        self.has_cuda = any(d["cuda"] for d in self.device_table)
        progress = self.options.get("progress")
        if progress is None:
            progress = _progress_from_env()
        if progress:
            self._progress = _ProgressMonitor(self._rt, progress)
        self._thread = threading.get_ident()
        self._thread_name = threading.current_thread().name
        _context.current = self
        _core._set_context(self)  # what the spawn path in C reads
        if logger.isEnabledFor(10):
            logger.debug("context started: %d workers, devices %s%s", self._rt.num_workers,
                         ", ".join(f"{d['kind']}({d['kind_index']})" for d in self.device_table), ", tracing" if tracing else "")
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Literal[False]:
        if self._forked:  # a child forked inside the context: the runtime is the parent's
            _context.current = None
            _core._set_context(None)
            self._rt = None
            if exc_type is None:
                raise RuntimeError("this Parla context was entered in the parent process: os.fork() was called "
                                   "inside it, and the child cannot wait for the parent's tasks (the parent "
                                   "does); start a new Parla context in the child, or fork outside contexts")
            return False
        try:
            error = self._finish(cancel=exc_type is not None, interrupted=exc_type is KeyboardInterrupt)
        finally:
            _context.current = None
            _core._set_context(None)
            blas, self._blas = self._blas, None
            _blas.restore(blas)
            switching, self._switching = self._switching, None
            _switching.restore(switching)
        if error is not None and exc_type is None:
            raise error
        return False

    async def __aenter__(self) -> "Parla":
        return self.__enter__()

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> Literal[False]:
        """``async with Parla():`` waits for the tasks in a thread, so the event loop keeps running; cancelling
        the awaiting coroutine cancels the tasks that have not started (as an exception in the block does)."""
        rt = self._rt
        if exc_type is None and rt is not None:
            stop = threading.Event()

            def wait_quietly() -> None:
                while not stop.is_set():
                    code, _ = rt.wait_all(0.05)
                    if code != _core.ETIMEDOUT:
                        return

            try:
                await _blocking.running_loop().run_in_executor(None, wait_quietly)  # in a coroutine: running
            except BaseException as e:  # cancelled: stop waiting, cancel and drain as on an error in the block
                stop.set()
                self.__exit__(type(e), e, e.__traceback__)
                raise
        return self.__exit__(exc_type, exc, tb)

    def _wait(self, rt: _core.Runtime) -> Tuple[int, str]:
        """Waits for all tasks in short slices, so Ctrl-C is handled while waiting."""
        while True:
            code, message = rt.wait_all(0.05)
            if code != _core.ETIMEDOUT:
                return code, message

    def _finish(self, cancel: bool, interrupted: bool = False) -> Optional[BaseException]:
        rt = self.runtime
        # From here on only task bodies may spawn: a spawn on another thread raises RuntimeError there, and
        # wait_all also waits for spawns already in progress, so none reaches a destroyed engine.
        rt.begin_close()
        cancelled_before: Optional[int] = None
        if cancel:
            # Said only when something is left to cancel or wait for: an exception that leaves a block whose
            # tasks have all finished cancels nothing, and the caller may catch it.
            if rt.wait_all(0.0)[0] != 0:
                logger.warning("cancelling the tasks that have not started: an exception left the Parla block")
                cancelled_before = rt.stats()["tasks_cancelled"]
            rt.cancel_all()
        try:
            code, message = self._wait(rt)
            if cancelled_before is not None:
                n = rt.stats()["tasks_cancelled"] - cancelled_before
                logger.warning("%d task%s cancelled", n, " was" if n == 1 else "s were")
        except KeyboardInterrupt as e:
            if interrupted:  # the block was left by Ctrl-C: this one is the second
                self._abandon(rt, e)
                raise
            logger.warning("interrupted: cancelling the tasks that have not started, waiting for running bodies")
            rt.cancel_all()
            try:
                self._drain(rt)
            except KeyboardInterrupt as again:
                self._abandon(rt, again)
                raise
            self._close_progress()
            raise
        stuck: Optional[RuntimeError] = None
        if code == _core.ESTUCK:
            # The engine speaks of submitting; in Python, tasks are spawned.
            text = message.replace("submitted", "spawned")
            if rt.unsubmitted():
                stuck = UnspawnedDependencyError(text)
            else:
                waiting = _unfinished_tasks(rt)
                stuck = DependencyCycleError(
                    text + ". Every spawned task waits on another: a cycle of dependencies, or an async task "
                    "awaiting a task that must wait for it (for example one reading a PArray the awaiting task "
                    "declared as output or inout)" + _waiting_tasks(waiting))
            rt.cancel_all()
            if isinstance(stuck, DependencyCycleError):
                # cancel_all cannot reach tasks in a cycle (they never become ready): the engine finishes the
                # waiting ones as cancelled, so the runtime closes and its workers end with the context. After
                # cancel_all, a suspended task they release is cancelled too, not resumed.
                try:
                    rt.cancel_stuck(_unfinished_tasks(rt))  # listed again: after cancel_all, not before
                except RuntimeError as e:  # not stuck that way after all: the tasks stay, the workers parked
                    logger.debug("the stuck tasks could not be cancelled: %s", e)
            self._drain(rt)
        failed = list(rt.failed)  # every task has finished: _wait or _drain returned
        self.failed = failed
        progress_error = self._close_progress()
        trace_error = None
        if self.trace_path or self.graph_path or self.options.get("summary") or self.summary_path:
            try:
                self.summary = rt.write_trace(self.trace_path, self.graph_path)
                if self.options.get("summary"):
                    print(self.summary, end="", flush=True)
                if self.summary_path:
                    with open(self.summary_path, "w") as f:
                        f.write(self.summary)
                    trace_logger.info("summary written to %s", self.summary_path)
                if self.trace_path:
                    trace_logger.info("trace written to %s", self.trace_path)
                if self.graph_path:
                    trace_logger.info("task graph written to %s", self.graph_path)
            except (OSError, RuntimeError) as e:
                trace_logger.warning("the trace could not be written: %s", e)
                trace_error = e
        if data_logger.isEnabledFor(10):
            for d in rt.devices():
                data_logger.debug("%s(%d): %d bytes in, %d bytes out, %d evictions, %d tasks", d["kind"],
                                  d["kind_index"], d["bytes_in"], d["bytes_out"], d["evictions"], d["tasks_mapped"])
        if failed:
            logger.debug("context finished: %d tasks failed, the first %s", len(failed), failed[0].name)
        else:
            logger.debug("context finished")
        # PArrays keep their latest values on the CPU after the context (reading them needs no runtime).
        # When tasks are stuck (a cycle) some data cannot be fetched; the stuck error says why.
        for parray in list(self._parrays.values()):
            try:
                parray._detach()
            except RuntimeError:
                if stuck is None:
                    raise
        try:
            rt.close()
        except RuntimeError:
            # Stuck tasks that could not be cancelled (a cycle through a suspended task) never finish; the
            # workers stay parked (no CPU used) and the stuck error below says why.
            if stuck is None:
                raise
        self._rt = None
        if not failed:
            error = stuck or trace_error or progress_error
            if stuck is not None and trace_error is not None:
                stuck.add_note(f"also, the trace could not be written: {trace_error}")
            return error
        first = failed[0]
        error = first._exception
        if error is None:  # recorded by the engine as failed without a Python exception
            error = RuntimeError(f"task {first.name} failed in the runtime")
        notes = _Notes(error)
        notes.add(f"raised by Parla task {first.name}")
        seen = {id(error)}
        others = 0
        for task in failed[1:]:
            if id(task._exception) not in seen:
                seen.add(id(task._exception))
                others += 1
                if others <= _MAX_FAILURE_NOTES:
                    notes.add(f"task {task.name} also failed: "
                              f"{_describe(task._exception) if task._exception is not None else 'in the runtime'}")
        if others > _MAX_FAILURE_NOTES:
            notes.add(f"and {others - _MAX_FAILURE_NOTES} more tasks failed ({len(failed)} in all; "
                      f"Parla.failed lists them)")
        if stuck is not None:
            notes.add(str(stuck))
        if trace_error is not None:
            notes.add(f"the trace could not be written: {trace_error}")
        if progress_error is not None:
            notes.add(f"the progress callback raised: {_describe(progress_error)}")
        return error

    def _close_progress(self) -> Optional[BaseException]:
        """Stops the progress monitor (final update); returns what its callback raised, if anything."""
        monitor, self._progress = self._progress, None
        if monitor is not None:
            try:
                monitor.close()
            except Exception as e:
                return e
        return None

    @staticmethod
    def _drain(rt: _core.Runtime) -> None:
        """Waits for the running bodies after a cancel. A Ctrl-C here propagates (KeyboardInterrupt)."""
        while True:
            code, _ = rt.wait_all(0.05)
            if code != _core.ETIMEDOUT:
                return
            rt.cancel_all()

    def _abandon(self, rt: _core.Runtime, interrupt: BaseException) -> None:
        """A second Ctrl-C while the exit waits for running bodies: stop waiting. What has not started is
        cancelled; the bodies still running are reported (stderr and a note on the KeyboardInterrupt) and
        left to their workers, which end with the process; the context is over and a new one can start."""
        rt.abandon()
        self._rt = None
        report = "parla: interrupted again while waiting for running task bodies; stopped waiting" + \
            _unfinished_report(rt) + ". Their workers are left running until the process ends."
        print(report, file=sys.stderr, flush=True)
        interrupt.add_note(report)
        try:
            self._close_progress()
        except BaseException:  # the report matters more than the progress bar
            pass
