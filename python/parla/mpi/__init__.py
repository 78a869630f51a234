"""The same Parla program on many processes (MPI ranks, on one node or many), with a sequential task flow.

    # mpirun -n 4 python program.py
    import numpy as np
    from parla import mpi
    from parla.mpi import Parla, spawn, DistArray, BlockCyclic, process_grid

    with Parla():                                   # every rank: its own engine and workers
        owner = BlockCyclic(*process_grid(mpi.size()))
        A = {(i, j): DistArray(lambda i=i, j=j: np.full((64, 64), i + j), owner=owner(i, j))
             for i in range(4) for j in range(4)}
        for i in range(4):
            for j in range(1, 4):
                @spawn(input=[A[i, j - 1]], inout=[A[i, j]])   # runs on the owner of A[i, j]
                def add(a=A[i, j - 1], b=A[i, j]):
                    b.array[...] += a.array
        mpi.fetch(A[3, 3], rank=0)                  # the latest A[3, 3] also on rank 0
    if mpi.rank() == 0:
        print(A[3, 3].numpy()[0, 0])

Model (as StarPU-MPI's sequential task flow, in this runtime's terms):

- Every rank runs the same program and spawns the same tasks, in the same order, with the same
  :class:`DistArray` objects (created in the same order on every rank).
- Each DistArray has an *owner* rank, given at creation (the layouts of :mod:`parla.mpi.layout` compute them
  for tiles). Only the owner holds its initial values.
- A task runs on the owner of the first DistArray it writes (``output=``/``inout=``), on ``rank=r`` when
  given, else on the owner of its first input, else on rank 0. The other ranks skip it: they create nothing
  for it, but record that it writes a new version of what it writes.
- When the running rank lacks the current version of an input, the rank that wrote that version sends it:
  a send task there and a receive task here, spawned in program order (see :mod:`parla.mpi._comm`). The
  received copy is reused by later readers on this rank until the data is written again (coherence across
  ranks: each version is sent to a rank at most once). Data written on a rank other than its owner stays
  there (the owner receives it when it reads it).
- Plain PArrays are private to each rank (passed through as they are). Explicit dependencies are honoured
  across ranks: a task depending on a task that runs on another rank waits for it (a signal message from
  that rank; see :mod:`parla.mpi._comm`). Name such tasks in a TaskSpace (``spawn`` returns None on the
  ranks that do not run a task).
- Every rank checks that the others run the same program (:mod:`parla.mpi._check`): ranks that create
  different DistArrays or spawn different tasks (other accesses, dependencies, order or number) are all
  stopped with :class:`ProgramMismatchError` naming the first step that differs, instead of waiting for ever
  on a message that never comes.
- Distributed tasks are spawned by the program, not from task bodies (RuntimeError naming the task); a body
  may spawn tasks of its own rank with :func:`parla.spawn`.

Failure: an exception in a task (or in the program inside the block) on one rank is sent to every rank; every
rank cancels its tasks, and every rank's ``with Parla():`` raises: the failing rank its exception, the others
:class:`RemoteTaskError` naming the rank and the task. A job that had a failure ends with MPI_Abort at
interpreter exit (after every rank has printed its error), so no rank waits forever in MPI_Finalize, and no
further distributed context can start in the process (RuntimeError). After a successful context, another
may follow (the DistArrays keep their values and versions). At exit every rank tells the others how many
contexts it entered (COMM_WORLD, tag 32000), so ranks waiting to enter a context it never opened stop with
RuntimeError instead of waiting for ever.
Ctrl-C under ``mpirun`` stops every rank (mpirun signals them all; a rank interrupted alone reports it as a
failure).

Tracing: ``Parla(trace="run.json")`` writes one trace per rank (``run.rank0.json``, ...) and its messages
(``run.rank0.mpi.json``); ``python -m parla.mpi.trace merge run.json`` merges them into one timeline with a
process per rank and a flow arrow per message.

Needs mpi4py (the ``mpi`` extra: ``pip install "parla-c[mpi]"``) and an MPI library (Debian: openmpi-bin,
libopenmpi-dev). Importing this module does not initialise MPI; :func:`rank`, :func:`size` and entering
:class:`Parla` do.
"""
from __future__ import annotations

import atexit
import inspect
import json
import os
import sys
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Literal, Optional, Sequence, Set, Tuple

import numpy as np

from .. import _config, _core, _runtime
from .. import tasks as _tasks
from ..array import PArray
from ..devices import cpu
from ._check import ProgramMismatchError
from ._comm import Engine, stall_warn_seconds
from .layout import Block, BlockCyclic, Cyclic, process_grid

__all__ = ["Parla", "spawn", "DistArray", "RemoteTaskError", "ProgramMismatchError", "fetch", "rank", "size",
           "world", "BlockCyclic", "Block", "Cyclic", "process_grid", "current_context"]


def _mpi() -> Any:
    """mpi4py's MPI module (initialises MPI on first use). Raises ImportError naming what to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("parla.mpi needs mpi4py and an MPI library: pip install 'parla-c[mpi]' (Debian: "
                          "apt-get install openmpi-bin libopenmpi-dev)") from e
    return MPI


def world() -> Any:
    """The communicator distributed contexts use by default (``MPI.COMM_WORLD``)."""
    return _mpi().COMM_WORLD


def rank() -> int:
    """This process's rank in the active distributed context's communicator (COMM_WORLD outside one)."""
    ctx = _active
    return ctx.rank if ctx is not None else int(world().Get_rank())


def size() -> int:
    """Number of ranks of the active distributed context's communicator (COMM_WORLD outside one)."""
    ctx = _active
    return ctx.size if ctx is not None else int(world().Get_size())


class RemoteTaskError(RuntimeError):
    """Raised on every rank but the failing one when a task (or the program) failed on another rank.
    ``rank``: the failing rank (None if unknown); ``text``: its report (rank, task, exception);
    ``others``: reports of further ranks that failed."""

    def __init__(self, text: str, others: Sequence[str] = ()) -> None:
        more = f" (and {len(others)} more failing ranks: {'; '.join(others)})" if others else ""
        super().__init__(f"{text}{more}")
        self.text = text
        self.others = list(others)
        self.rank: Optional[int] = None
        if text.startswith("rank "):
            head = text[5:].split(",", 1)[0].split(":", 1)[0]
            if head.strip().isdigit():
                self.rank = int(head)


_active: Optional["Parla"] = None
_next_id = 0                       # the next DistArray id: creation order, the same on every rank
_contexts = 0                      # distributed contexts entered so far in this process
_failed: Optional[str] = None      # the failure that ended an earlier context (no new one can start)
_abort_armed = False
_TAG_DEPART = 32000                # COMM_WORLD tag: a rank's program has ended (payload: contexts it entered)
_depart_armed = False


def _not_in_task(what: str) -> None:
    """Raises RuntimeError naming the running task when called from a task body inside a distributed context
    (``what``: the call, for the message)."""
    task = _core.current_task()
    if task is not None:
        raise RuntimeError(f"task {task.name} calls {what} from its body: the distributed program is spawned by "
                           f"the program itself, identically on every rank, not from task bodies (which run on "
                           f"one rank); inside a task, spawn tasks of this rank with parla.spawn on PArrays")


def current_context() -> "Parla":
    """The active distributed context. Raises RuntimeError outside one."""
    if _active is None:
        raise RuntimeError("no distributed Parla context is active: use 'with parla.mpi.Parla():' (the "
                           "distributed spawn and fetch work inside it)")
    return _active


def _default_workers(comm: Any) -> int:
    """Compute workers per rank: the cores this process may use shared among the ranks on its node."""
    MPI = _mpi()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local = int(node.Get_size())
        node.Free()
    except Exception:
        local = 1
    return max(1, cores // max(1, int(local)))


def _arm_abort() -> None:
    """After a failure: at interpreter exit, give every rank up to 5 s to print its error, then MPI_Abort (a
    rank could otherwise wait forever in MPI_Finalize for a message a failed rank never sends)."""
    global _abort_armed
    if _abort_armed:
        return
    _abort_armed = True

    def abort() -> None:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        comm = world()
        try:
            req = comm.Ibarrier()
            deadline = time.monotonic() + 5.0
            while not req.Test() and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            comm.Abort(1)
    atexit.register(abort)


class DistArray:
    """An array with an owner rank, usable in the ``input=``/``output=``/``inout=`` of :func:`spawn`.

    ``init``: the initial values, evaluated on the owner only: a NumPy array (or anything ``np.asarray``
    takes), a callable returning one (so other ranks never build it), or None (uninitialised, for data a
    task writes first with ``output=``). On the other ranks ``shape`` and
    ``dtype`` give the buffer a receive needs; they are taken from ``init`` when it is an array, and
    required with a callable. ``owner``: a rank of the communicator. ``name`` names it in task names and
    messages (default ``"D<id>"``).

    Every rank must create the same DistArrays in the same order (the creation order is the array's id in
    message tags). Attributes: ``owner``, ``shape``, ``dtype``, ``nbytes``, ``name``, ``version`` (number of
    writes spawned so far), ``holders`` (ranks that hold the current version, once the spawned tasks have
    run). Inside a task on this rank, ``array`` is the local copy (as ``PArray.array``); outside tasks use
    :meth:`numpy`. Raises ValueError for an owner out of range or a missing shape/dtype."""

    def __init__(self, init: Any, owner: int = 0, shape: Optional[Sequence[int]] = None, dtype: Any = None,
                 name: Optional[str] = None, comm: Any = None) -> None:
        global _next_id
        if _active is not None:
            _not_in_task(f"parla.mpi.DistArray({name!r})" if name is not None else "parla.mpi.DistArray")
        if comm is None:
            comm = _active.comm if _active is not None else world()
        self.rank = comm.Get_rank()
        n_ranks = comm.Get_size()
        if isinstance(owner, bool) or not isinstance(owner, (int, np.integer)) or not 0 <= owner < n_ranks:
            raise ValueError(f"DistArray(owner={owner!r}): the owner must be a rank from 0 to {n_ranks - 1}")
        self.id = _next_id
        _next_id += 1
        self.name = name if name is not None else f"D{self.id}"
        self.owner = int(owner)
        self.local: Optional[PArray] = None     # this rank's copy (any version), once it has one
        if self.rank == self.owner:
            if init is None:
                if shape is None or dtype is None:
                    raise ValueError(f"DistArray {self.name}: without initial values, give shape= and dtype=")
                init = np.empty(tuple(int(n) for n in shape), dtype=dtype)
            value = init() if callable(init) else init
            value = np.ascontiguousarray(np.asarray(value, dtype=dtype))
            if value.dtype.hasobject:
                raise TypeError(f"DistArray {self.name}: a distributed array holds numbers, not Python objects")
            self.local = PArray(value, name=self.name)
            self.shape: Tuple[int, ...] = tuple(value.shape)
            self.dtype = value.dtype
            if shape is not None and tuple(shape) != self.shape:
                raise ValueError(f"DistArray {self.name}: shape={tuple(shape)} but the initial values have shape "
                                 f"{self.shape}")
        else:
            if callable(init) or init is None:
                if shape is None or dtype is None:
                    raise ValueError(f"DistArray {self.name}: with a callable (or no) init, give shape= and dtype= "
                                     f"(the ranks other than the owner need them for their receive buffers)")
                self.shape = tuple(int(n) for n in shape)
                self.dtype = np.dtype(dtype)
            else:
                a = np.asarray(init, dtype=dtype)
                self.shape, self.dtype = tuple(a.shape), a.dtype
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.version = 0
        self.writer = self.owner                # the rank that wrote the current version
        self.holders: Set[int] = {self.owner}   # ranks with the current version (after the spawned tasks)
        self._local_version = 0 if self.local is not None else -1
        if _active is not None:
            _active._step(("array", self.id, self.name, self.owner, self.shape, self.dtype.str))

    def _storage(self) -> PArray:
        """This rank's PArray for the array (allocated, uninitialised, on first need)."""
        if self.local is None:
            self.local = PArray(np.empty(self.shape, dtype=self.dtype), name=self.name)
        return self.local

    @property
    def array(self) -> Any:
        """Inside a task on this rank: the local copy's array on the task's device (declare the access).
        Outside tasks: :meth:`numpy`."""
        task = _core.current_task()
        if task is None:
            return self.numpy()
        if self.local is None:
            raise RuntimeError(f"task {task.name} uses DistArray {self.name}, which it did "
                               f"not declare (rank {self.rank} has no copy of it)")
        return self.local.array

    def is_current(self) -> bool:
        """Whether this rank holds (or, once its spawned tasks have run, will hold) the current version."""
        return self.rank in self.holders

    def numpy(self) -> np.ndarray:
        """The current values on this rank, as a NumPy array (inside an active context it waits for the tasks
        writing them). Raises RuntimeError when this rank does not hold the current version: it names the
        ranks that do (use :func:`fetch` in the context first)."""
        if not self.is_current() or self.local is None:
            raise RuntimeError(f"rank {self.rank} does not hold the current version of DistArray {self.name} "
                               f"(version {self.version}, held by rank(s) {sorted(self.holders)}): call "
                               f"parla.mpi.fetch({self.name}, rank={self.rank}) inside the context first")
        return np.asarray(self.local.array)

    def __repr__(self) -> str:
        return (f"<DistArray {self.name} shape={self.shape} dtype={self.dtype} owner={self.owner} "
                f"version={self.version} holders={sorted(self.holders)}>")


def _flatten(items: Any) -> Iterator[Any]:
    if items is None:
        return
    if isinstance(items, (list, tuple)):
        for x in items:
            yield from _flatten(x)
    else:
        yield items


class Parla(_runtime.Parla):
    """A Parla context on every rank of an MPI communicator (``comm``, default COMM_WORLD): each rank runs
    its own engine. Takes the options of :class:`parla.Parla`; ``n_workers`` (default: this node's cores
    divided among its ranks) is the number of compute workers, and the context adds one worker for the
    progress task that drives MPI. ``trace="run.json"`` writes ``run.rank<r>.json`` and
    ``run.rank<r>.mpi.json`` per rank (see :mod:`parla.mpi.trace`). ``failure_timeout`` (seconds, default 30):
    after a failure, how long the ranks wait for each other at the end of the block before MPI_Abort.

    Entering is collective (every rank of comm enters; a rank waiting longer than PARLA_MPI_STALL_WARN
    seconds for the others says so on stderr); leaving is collective too: it waits for the local tasks, then
    meets the other ranks, and raises if any rank failed or the ranks' programs differ
    (:class:`ProgramMismatchError`; see the module docstring). One distributed context at a time per process;
    contexts may follow each other, but none after a failed one (RuntimeError). After exit, ``stats`` holds
    this rank's counts: tasks run and skipped, data messages and bytes sent and received, signals sent and
    received, transfers of the whole program."""

    def __init__(self, n_workers: Optional[int] = None, *, comm: Any = None, failure_timeout: float = 30.0,
                 **options: Any) -> None:
        MPI = _mpi()
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._trace_base = options.get("trace") or options.get("logfile") or os.environ.get("PARLA_TRACE") or None
        if self._trace_base:
            options.pop("logfile", None)
            options["trace"] = _rank_path(self._trace_base, self.rank)
        self.failure_timeout = float(failure_timeout)
        self._compute_workers = n_workers
        super().__init__(n_workers, **options)
        self.engine: Any = None
        self.stats: Dict[str, int] = {}
        # id(task) -> (weak reference to the task, rank running it, its step) for the distributed tasks spawned
        # so far (on every rank for TaskSpace tasks; anonymous ones only where they run). Weak: a finished
        # anonymous task the program dropped is not kept (nor its result).
        self._where: Dict[int, Tuple[Any, int, int]] = {}
        self._forward: Dict[int, Tuple[Any, Set[int]]] = {}  # not yet spawned dependency -> ranks waiting for it
        self._links: Set[Tuple[int, int]] = set()          # (id(task), rank) already signalled
        self._signal_count = 0
        self._local = 0
        self._skipped = 0
        self._transfers = 0              # transfers spawned by the whole program (every rank counts all)
        self._transfer_bytes = 0
        self._sent_model: Dict[int, int] = {}

    def __enter__(self) -> "Parla":
        global _active, _contexts
        if _active is not None:
            raise RuntimeError("a distributed Parla context is already active in this process")
        if _failed is not None:
            raise RuntimeError(f"no distributed context can start after a failed one ({_failed}): the job ends "
                               f"with MPI_Abort when the program exits")
        _not_in_task("parla.mpi.Parla()")
        compute = self._compute_workers or _config.env_int("PARLA_NUM_THREADS") or _default_workers(self.comm)
        self.n_workers = compute + 1     # one more worker for the progress task
        _enter_barrier(self.comm, _contexts)
        number = _contexts
        _contexts += 1
        sync = time.monotonic_ns()
        super().__enter__()
        try:
            self.engine = Engine(self.comm, self.runtime)
        except BaseException:
            super().__exit__(*sys.exc_info())
            raise
        self.engine.sync_mono_ns = sync
        self.engine.program.add(("enter", number, _next_id, self.size))
        _active = self
        progress = _tasks.Task(self.runtime, "mpi progress")
        _tasks.spawn(progress, placement=cpu, priority=1000000)(self.engine.run)
        self._progress_task = progress
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        global _active
        engine = self.engine
        if exc_type is not None:
            what = "was interrupted (KeyboardInterrupt)" if exc_type is KeyboardInterrupt else \
                f"raised {exc_type.__name__}: {exc}"
            engine.report_failure(f"rank {self.rank}: the program {what} in its Parla block, outside tasks")
        engine.end(final=exc_type is None)
        local_error: Optional[BaseException] = None
        try:
            super().__exit__(exc_type, exc, tb)
        except BaseException as e:
            local_error = e
        finally:
            _active = None
        failures, mismatch = engine.agree(self.failure_timeout)
        self.stats = {
            "rank": self.rank, "size": self.size, "tasks_run": self._local, "tasks_skipped": self._skipped,
            "messages_sent": engine.messages_sent, "bytes_sent": engine.bytes_sent,
            "messages_received": engine.messages_received, "bytes_received": engine.bytes_received,
            "signals_sent": engine.signals_sent, "signals_received": engine.signals_received,
            "transfers_total": self._transfers, "transfer_bytes_total": self._transfer_bytes,
            "steps": engine.program.count,
        }
        if self._trace_base:
            self._write_messages()
        if mismatch is not None:
            global _failed
            error = ProgramMismatchError(*mismatch)
            _failed = f"rank {self.rank}: {error}"
            _arm_abort()
            print(f"parla.mpi: rank {self.rank}: {error}", file=sys.stderr, flush=True)
            raise error from (exc if exc_type is not None else local_error)
        if failures:
            _failed = failures[0]
            _arm_abort()
            note = (f"on MPI rank {self.rank} of {self.size}; every rank stopped" +
                    (f" (failures: {'; '.join(failures)})" if len(failures) > 1 else ""))
            if exc_type is not None:
                if exc is not None:
                    exc.add_note(note)
                return False
            if local_error is not None:
                if engine.local_failure:
                    local_error.add_note(note)
                    raise local_error
                remote = RemoteTaskError(failures[0], failures[1:])
                raise remote from local_error
            raise RemoteTaskError(failures[0], failures[1:])
        if local_error is not None:
            raise local_error
        return False

    # -- spawning ---------------------------------------------------------------------------------------
    def _step(self, record: Tuple[Any, ...]) -> None:
        """Adds one step of the distributed program (see parla.mpi._check)."""
        self.engine.program.add(record)

    def _spawn(self, taskid: Any, dependencies: Any, rank: Optional[int], input: Any, output: Any, inout: Any,
               options: Dict[str, Any], body: Callable[..., Any]) -> Any:
        label = taskid.name if isinstance(taskid, (_tasks.Task, _tasks.TaskHandle)) else \
            getattr(body, "__name__", "task")
        _not_in_task(f"parla.mpi.spawn (task {label})")
        # The task object, the same TaskSpace entry on every rank (None for an anonymous task).
        task_obj: Any
        if taskid is None or isinstance(taskid, _tasks.Task):
            task_obj = taskid
        elif isinstance(taskid, _tasks.TaskHandle):
            task_obj = taskid.task()
        elif isinstance(taskid, _tasks.TaskSpace):
            task_obj = taskid[_tasks._next_key(taskid)]
        else:
            raise TypeError(f"spawn(taskid={taskid!r}): taskid must be a task from a TaskSpace, e.g. T[0]")
        name = task_obj.name if task_obj is not None else getattr(body, "__name__", "task")
        reads_in = list(_flatten(input))
        writes_out = list(_flatten(output))
        writes_inout = list(_flatten(inout))
        for arg, items in (("input", reads_in), ("output", writes_out), ("inout", writes_inout)):
            for x in items:
                if not isinstance(x, (DistArray, PArray)):
                    raise TypeError(f"task {name}: {arg}= holds a {type(x).__name__}; a distributed task declares "
                                    f"DistArrays (or PArrays private to the running rank)")
        dist_writes = [x for x in writes_out + writes_inout if isinstance(x, DistArray)]
        dist_reads = [x for x in reads_in + writes_inout if isinstance(x, DistArray)]
        if rank is not None:
            if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < self.size:
                raise ValueError(f"task {name}: rank={rank!r} must be a rank from 0 to {self.size - 1}")
            where = int(rank)
        elif dist_writes:
            where = dist_writes[0].owner
        elif dist_reads:
            where = dist_reads[0].owner
        else:
            where = 0
        me = self.rank
        # Dependencies: on a task of this rank as they are; on a task of another rank through a signal (its
        # proxy here); on a task not spawned yet, linked when it is.
        dep_steps: List[Tuple[Any, ...]] = []
        deps: List[Any] = []
        if dependencies not in ((), [], None):
            for t in _tasks._flatten(dependencies):
                known = self._where.get(id(t))
                if known is not None and known[0]() is not t:
                    known = None         # another object that had the same id
                if known is not None:
                    dep_steps.append(("step", known[2], t.name))
                    if known[1] != where:
                        self._link(t, known[1], where)
                elif isinstance(t, _tasks.Task) and t.state == "created":
                    dep_steps.append(("later", t.name))
                    self._forward.setdefault(id(t), (t, set()))[1].add(where)
                deps.append(t)
        step = self.engine.program.count
        self._step(("task", name, where, tuple((d.id, d.name) for d in reads_in if isinstance(d, DistArray)),
                    tuple((d.id, d.name) for d in writes_out if isinstance(d, DistArray)),
                    tuple((d.id, d.name) for d in writes_inout if isinstance(d, DistArray)), tuple(dep_steps)))
        seen: Set[int] = set()
        for d in dist_reads:
            if id(d) in seen:
                continue
            seen.add(id(d))
            if where not in d.holders:
                self._transfer(d, d.writer, where)
        task = None
        if where == me:
            def local(x: Any) -> Any:
                return x._storage() if isinstance(x, DistArray) else x
            wrapped = _reporting(body, self.engine, me, name)
            task = _tasks.spawn(task_obj, deps, input=[local(x) for x in reads_in],
                                output=[local(x) for x in writes_out], inout=[local(x) for x in writes_inout],
                                **options)(wrapped)
            self._local += 1
            self._where[id(task)] = (weakref.ref(task), where, step)
        else:
            self._skipped += 1
            if task_obj is not None:
                self._where[id(task_obj)] = (weakref.ref(task_obj), where, step)
        if task_obj is not None:
            waiting = self._forward.pop(id(task_obj), None)
            if waiting is not None:
                for r in sorted(waiting[1]):
                    if r != where:
                        self._link(task_obj, where, r)
        for d in dist_reads:
            if where == me:
                d._local_version = d.version
        for d in {id(x): x for x in dist_writes}.values():
            d.version += 1
            d.writer = where
            d.holders = {where}
            if where == me:
                d._local_version = d.version
        return task

    def _transfer(self, d: DistArray, src: int, dst: int) -> None:
        """Spawns the transfer of the current version of d from rank src to rank dst (on those two ranks)."""
        me = self.rank
        version = d.version
        self._transfers += 1
        self._transfer_bytes += d.nbytes
        self._sent_model[src] = self._sent_model.get(src, 0) + d.nbytes
        engine = self.engine
        if me == src:
            local = d._storage()
            name = f"send {d.name}@{version} to {dst}"

            async def send(local: PArray = local) -> None:
                buf = local.array
                if not buf.flags.c_contiguous:
                    buf = np.ascontiguousarray(buf)
                await engine.post("send", buf, dst, d.id, version, name)
            self._spawn_comm(name, send, input=[local])
        elif me == dst:
            local = d._storage()
            name = f"recv {d.name}@{version} from {src}"

            async def recv(local: PArray = local) -> None:
                await engine.post("recv", local.array, src, d.id, version, name)
            self._spawn_comm(name, recv, output=[local])
        d.holders.add(dst)

    def _link(self, t: Any, src: int, dst: int) -> None:
        """Makes task t (running on rank src) a dependency rank dst can use: src signals dst when t has
        finished, and on dst the local entry of t becomes a proxy task that completes on that signal. Once per
        (task, rank); on every rank, in program order (the signal's number is its tag)."""
        key = (id(t), dst)
        if key in self._links:
            return
        self._links.add(key)
        number = self._signal_count
        self._signal_count += 1
        engine = self.engine
        if self.rank == src:
            name = f"notify {t.name} to {dst}"

            async def notify() -> None:
                await engine.signal("send", dst, number, name)
            self._spawn_comm(name, notify, dependencies=[t])
        elif self.rank == dst:
            what = f"wait for {t.name} on rank {src}"

            async def proxy() -> None:
                await engine.signal("recv", src, number, what)
            self._spawn_comm(what, proxy, task=t)

    def _spawn_comm(self, name: str, body: Callable[..., Any], task: Any = None, dependencies: Any = (),
                    **access: Any) -> None:
        engine = self.engine
        with engine._lock:
            engine.expected += 1
        if task is None:
            task = _tasks.Task(self.runtime, name)
        _tasks.spawn(task, dependencies, placement=cpu, priority=1, **access)(
            _reporting(body, engine, self.rank, name))

    def _write_messages(self) -> None:
        """Writes this rank's messages next to its trace (``<base>.rank<r>.mpi.json``)."""
        engine = self.engine
        base = str(self._trace_base)
        path = _rank_path(base, self.rank, ".mpi.json")
        record = {
            "rank": self.rank, "size": self.size, "sync_mono_ns": engine.sync_mono_ns,
            "trace": os.path.basename(_rank_path(base, self.rank)),
            "messages": [{"kind": op.kind, "peer": op.peer, "data": op.did, "version": op.version,
                          "bytes": op.nbytes, "task": op.name, "post_ns": op.t_post, "done_ns": op.t_done}
                         for op in engine.log],
            "stats": self.stats,
        }
        try:
            with open(path, "w") as f:
                json.dump(record, f)
        except OSError as e:
            print(f"parla.mpi: rank {self.rank}: the message log could not be written to {path}: {e}",
                  file=sys.stderr)


def _rank_path(base: str, rank: int, suffix: str = ".json") -> str:
    root, ext = os.path.splitext(str(base))
    if ext.lower() != ".json":
        root = str(base)
    return f"{root}.rank{rank}{suffix}"


def _arm_depart() -> None:
    """At interpreter exit, tells every rank of COMM_WORLD how many distributed contexts this process entered
    (tag _TAG_DEPART): a rank still waiting to enter a context this one never opened then stops with an
    error instead of waiting for ever (see :func:`_enter_barrier`)."""
    global _depart_armed
    if _depart_armed:
        return
    _depart_armed = True

    def depart() -> None:
        comm = world()
        payload = np.array([_contexts], dtype=np.int64)
        reqs = [comm.Isend([payload, _mpi().INT64_T], dest=r, tag=_TAG_DEPART)
                for r in range(comm.Get_size()) if r != comm.Get_rank()]
        deadline = time.monotonic() + 5.0
        while reqs and time.monotonic() < deadline:   # small messages: sent at once (eager); never blocks long
            reqs = [q for q in reqs if not q.Test()]
            time.sleep(1e-3)
    atexit.register(depart)


def _departed(comm: Any, number: int) -> Optional[str]:
    """A rank of comm whose program ended before entering context #number (from its departure message), as
    text; None if none (so far)."""
    MPI = _mpi()
    w = world()
    status = MPI.Status()
    while w.Iprobe(source=MPI.ANY_SOURCE, tag=_TAG_DEPART, status=status):
        source = status.Get_source()
        buf = np.zeros(1, dtype=np.int64)
        w.Recv([buf, MPI.INT64_T], source=source, tag=_TAG_DEPART)
        entered = int(buf[0])
        if comm is w or comm == w:
            member: Optional[int] = source
        else:
            member = MPI.Group.Translate_ranks(w.Get_group(), [source], comm.Get_group())[0]
            member = None if member == MPI.UNDEFINED else member
        if member is not None and entered <= number:
            return (f"rank {member} ended its program after {entered} distributed context(s); rank "
                    f"{comm.Get_rank()} is entering context #{number}: the ranks do not run the same program")
    return None


def _enter_barrier(comm: Any, number: int) -> None:
    """The collective entry of a context: waits for every rank (polling, so a rank left waiting longer than
    PARLA_MPI_STALL_WARN seconds, default 60, says so on stderr once). Raises RuntimeError when a rank's
    program ended without entering this context (the job then ends with MPI_Abort at exit)."""
    global _failed
    _arm_depart()
    req = comm.Ibarrier()
    warn = stall_warn_seconds()
    start = time.monotonic()
    delay = 0.0
    while not req.Test():
        delay = min(max(delay * 2, 50e-6), 1e-3)
        time.sleep(delay)
        gone = _departed(comm, number)
        if gone is not None:
            _failed = gone
            _arm_abort()
            print(f"parla.mpi: {gone}", file=sys.stderr, flush=True)
            raise RuntimeError(gone)
        if warn > 0 and time.monotonic() - start > warn:
            print(f"parla.mpi: rank {comm.Get_rank()} has waited {warn:g} s for the other ranks to enter "
                  f"distributed context #{number} (does every rank open the same contexts?)",
                  file=sys.stderr, flush=True)
            warn = 0.0


def _reporting(body: Callable[..., Any], engine: Any, me: int, name: str) -> Callable[..., Any]:
    """body, reporting an exception it raises to every rank before it propagates."""
    if inspect.iscoroutinefunction(body):
        async def run_async() -> Any:
            try:
                return await body()
            except BaseException as e:
                engine.report_failure(f"rank {me}, task {name}: {type(e).__name__}: {e}")
                raise
        run_async.__name__ = getattr(body, "__name__", "task")
        return run_async

    def run() -> Any:
        try:
            return body()
        except BaseException as e:
            engine.report_failure(f"rank {me}, task {name}: {type(e).__name__}: {e}")
            raise
    run.__name__ = getattr(body, "__name__", "task")
    return run


def spawn(taskid: Any = None, dependencies: Any = (), *, rank: Optional[int] = None, input: Iterable[Any] = (),
          output: Iterable[Any] = (), inout: Iterable[Any] = (), **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """The distributed :func:`parla.spawn`, called by every rank in the same order (inside a
    :class:`parla.mpi.Parla` context). Decides the running rank (``rank=``, else the owner of the first
    DistArray written, else of the first read, else 0), spawns the transfers the running rank needs, and on
    that rank spawns the task with ``parla.spawn`` (its DistArrays replaced by the local copies; the other
    options, ``placement``, ``priority``, ``vcus``, ... passed on). ``dependencies`` are honoured across
    ranks (a task on another rank is waited for through a signal; name such tasks in a TaskSpace). Returns
    the Task on the running rank and None on the others. Raises RuntimeError outside a distributed context or from a task body; TypeError and
    ValueError for bad declarations or ranks (naming the task)."""
    ctx = current_context()
    _not_in_task("parla.mpi.spawn")

    def decorator(body: Callable[..., Any]) -> Any:
        return ctx._spawn(taskid, dependencies, rank, input, output, inout, options, body)
    return decorator


def fetch(arrays: Any, rank: Optional[int] = None) -> None:
    """Makes the current version of each DistArray in ``arrays`` (one, or nested lists) valid on ``rank``
    (every rank when None), spawning the transfers needed; collective like :func:`spawn`. After the context,
    :meth:`DistArray.numpy` gives the values there."""
    ctx = current_context()
    _not_in_task("parla.mpi.fetch")
    targets = range(ctx.size) if rank is None else [rank]
    for r in targets:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < ctx.size:
            raise ValueError(f"fetch(rank={r!r}): the rank must be from 0 to {ctx.size - 1}")
    for d in _flatten(arrays):
        if not isinstance(d, DistArray):
            raise TypeError(f"fetch: expected DistArrays, got a {type(d).__name__}")
        ctx._step(("fetch", d.id, d.name, tuple(int(r) for r in targets)))
        for r in targets:
            if r not in d.holders:
                ctx._transfer(d, d.writer, int(r))
                if r == ctx.rank:
                    d._local_version = d.version

