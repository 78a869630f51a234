"""The communication engine of a distributed context: MPI requests as tasks of the graph.

Every transfer is a pair of tasks spawned in program order on the two ranks concerned: a *send* task on the
rank that holds the data (it reads the local PArray) and a *receive* task on the rank that needs it (it writes
the local copy). Their bodies are ``async``: each hands one non-blocking operation (``Isend``/``Irecv`` on
the task's host buffer) to this engine and awaits a *gate*, a task the engine spawns when MPI reports the
request complete. The worker is free meanwhile, and the data hazards of the engine order everything else:
readers of a received copy wait for the receive task, the next writer of a sent array waits for the send
task (so MPI never sees its buffer change).

One *progress task*, spawned first on a worker the context adds for it, is the only thread that calls MPI
while the context runs (MPI_THREAD_SERIALIZED use): it posts the queued operations, tests the active
requests (``Testsome``), spawns the gates of the completed ones, and watches the control channel for the
failure of another rank. It sleeps between idle polls (50 us doubling to 1 ms, GIL released), so an idle
rank uses little CPU. It is a running task, so the engine never sees a runtime waiting on messages as stuck.

Messages are matched by (data, version): the tag is ``(data id mod 2**d) << v | (version mod 2**v)`` with
v = 8 version bits and d the bits left under MPI_TAG_UB. On one (source, destination) pair the transfers of
one array are ordered on both sides (the receive of version k+1 waits, through the hazards on the local
copy, for the readers of version k; the writer of k+1 on the sender waits for the send of k), and MPI does
not overtake messages of one tag, so equal tags never cross.

*Signals* carry explicit dependencies across ranks: when a task on rank r depends on a task that runs on rank
s, rank s spawns a *notify* task after it that sends an empty message to r, and rank r spawns its own copy of
the task (the same TaskSpace entry) as a *proxy* whose body awaits that message; the dependent task depends on
the proxy. Signals travel on a communicator of their own, tagged by their number in the program (the same on
every rank, as the links are made in program order), modulo MPI_TAG_UB + 1.

The control channel also carries the program check of :mod:`parla.mpi._check` (state messages, received
with ``Iprobe``/``Recv`` so that no receive is left posted at the end).
"""
from __future__ import annotations

import collections
import os
import sys
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

import numpy as np

from ..tasks import Task
from ._check import STATE_BYTES, PeerStates, ProgramLog, locate, pack_state, unpack_state

__all__ = ["Engine", "Op"]

TAG_FAILURE = 1          # control channel: a rank failed (payload: text)
TAG_STATE = 2            # control channel: a rank's program state (see parla.mpi._check)
_FAILURE_BYTES = 4096    # longest failure text carried
_VERSION_BITS = 8


class Op:
    """One non-blocking operation and the gate task spawned when it completes."""

    __slots__ = ("kind", "buf", "peer", "tag", "gate", "did", "version", "name", "nbytes", "t_post", "t_done",
                 "failed", "comm")

    def __init__(self, kind: str, buf: Any, peer: int, tag: int, gate: Any, did: int, version: int,
                 name: str, comm: Any = None) -> None:
        self.kind = kind          # "send" or "recv"
        self.buf = buf            # a C-contiguous NumPy array (kept alive until the request completes)
        self.peer = peer
        self.tag = tag
        self.gate = gate
        self.did = did
        self.version = version
        self.name = name          # the communication task's name
        self.nbytes = int(buf.nbytes)
        self.t_post = 0.0         # time.monotonic_ns() when posted
        self.t_done = 0.0
        self.failed = False
        self.comm = comm          # the communicator (data, or signals when did is -1)


def stall_warn_seconds() -> float:
    """PARLA_MPI_STALL_WARN: seconds a rank waits (for a message, or for the others at a context's entry)
    before saying so on stderr; default 60, 0 never."""
    try:
        return float(os.environ.get("PARLA_MPI_STALL_WARN", "60"))
    except ValueError:
        return 60.0


def _noop() -> None:
    return None


class Engine:
    """Posts and progresses the MPI operations of one rank's distributed context (see the module docstring).

    ``comm`` is the communicator the program runs on (COMM_WORLD by default); the engine works on three
    duplicates of it: data, signals (dependencies across ranks) and control messages. ``program`` is this
    rank's :class:`~parla.mpi._check.ProgramLog` (the context adds the steps). Thread context: :meth:`post`
    and :meth:`signal` from task bodies (any worker), :meth:`run` is the progress task's body,
    :meth:`report_failure` and :meth:`end` from any thread; the other methods on the main thread outside the
    progress task's lifetime."""

    def __init__(self, comm: Any, runtime: Any) -> None:
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.data = comm.Dup()
        self.signals = comm.Dup()
        self.ctrl = comm.Dup()
        self.runtime = runtime
        tag_ub = int(comm.Get_attr(MPI.TAG_UB) or 32767)
        self.tag_ub = tag_ub
        self.did_bits = max(1, tag_ub.bit_length() - 1 - _VERSION_BITS)
        self._lock = threading.Lock()  # protects _queue, _failures_out, failure, expected, posted, ended
        self._queue: Deque[Op] = collections.deque()
        self._failures_out: List[str] = []
        self.failure: Optional[str] = None   # the first failure known to this rank (text naming rank and task)
        self.local_failure = False           # the failure happened on this rank
        self.local_mismatch = False          # ... and it was a difference between the ranks' programs
        self.expected = 0                    # communication tasks spawned
        self.posted = 0                      # operations they have posted
        self.ended = False                   # the program has left its Parla block
        self._active: List[Tuple[Any, Op]] = []
        self._abandoned: List[Any] = []      # requests left pending after a failure (kept alive)
        self._failure_buf = bytearray(_FAILURE_BYTES)
        self._failure_req: Any = None
        self._failure_sends: List[Any] = []
        self.log: List[Op] = []              # completed operations (for the trace and the statistics)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.signals_sent = 0
        self.signals_received = 0
        # The program check (parla.mpi._check): this rank's steps, what the peers published, and when to publish.
        self.program = ProgramLog()
        self.peers = PeerStates(self.program, self.rank, self.size)
        try:
            self.check_interval = max(0.001, float(os.environ.get("PARLA_MPI_CHECK_INTERVAL", "0.2")))
        except ValueError:
            self.check_interval = 0.2
        self._published = 0                  # step count last published
        self._next_publish = 0.0             # time.monotonic() of the next publication
        self._next_check = 0.0
        self._final = False                  # the program left its block without an exception (under _lock)
        self._final_sent = False
        self._state_sends: List[Tuple[Any, bytes]] = []
        self.sync_mono_ns = 0                # time.monotonic_ns() when the ranks left the start barrier
        self.error: Optional[BaseException] = None  # what the progress task raised, if anything
        # A request pending this long (seconds; PARLA_MPI_STALL_WARN, 0 = never) is reported once on stderr:
        # the usual cause is ranks that did not run the same program (different arrays or tasks).
        self.stall_warn = stall_warn_seconds()
        self._stall_check = 0.0
        self._warned: Set[int] = set()

    # -- tags -----------------------------------------------------------------------------------------
    def tag(self, did: int, version: int) -> int:
        """The MPI tag of version ``version`` of data ``did``."""
        return ((did % (1 << self.did_bits)) << _VERSION_BITS) | (version % (1 << _VERSION_BITS))

    # -- called from communication task bodies -------------------------------------------------------
    def post(self, kind: str, buf: Any, peer: int, did: int, version: int, name: str) -> Any:
        """Queues ``Isend`` (kind "send") or ``Irecv`` ("recv") of ``buf`` with rank ``peer`` for version
        ``version`` of data ``did``; returns the gate task to await (it is spawned when the request completes,
        or at once after a failure). ``buf``: a C-contiguous NumPy array, untouched until the gate."""
        gate = Task(self.runtime, f"{name} done")
        op = Op(kind, buf, peer, self.tag(did, version), gate, did, version, name, self.data)
        return self._enqueue(op)

    def signal(self, kind: str, peer: int, number: int, name: str) -> Any:
        """Queues the send (kind "send") or receive ("recv") of signal ``number`` (an empty message) with rank
        ``peer``; returns the gate task to await, as :meth:`post`."""
        gate = Task(self.runtime, f"{name} done")
        op = Op(kind, np.zeros(1, dtype=np.uint8), peer, number % (self.tag_ub + 1), gate, -1, number, name,
                self.signals)
        return self._enqueue(op)

    def _enqueue(self, op: Op) -> Any:
        gate = op.gate
        with self._lock:
            self.posted += 1
            if self.failure is None:
                self._queue.append(op)
                return gate
        op.failed = True
        self._open(op)
        return gate

    def _open(self, op: Op) -> None:
        # After a failure, cancel_all may have cancelled the gate already (a never-spawned task others await).
        if op.gate.state == "created":
            try:
                op.gate._submit(_noop, (), 0, 0.0, 0, None, ())
            except RuntimeError:
                if self.failure is None:
                    raise

    # -- failure --------------------------------------------------------------------------------------
    def report_failure(self, text: str, mismatch: bool = False) -> None:
        """Records a failure of this rank (``text`` names the rank and the task; ``mismatch``: the ranks' programs
        differ) and has the progress task send it to every other rank. Only the first failure is kept. Any
        thread."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure = text
            self.local_failure = True
            self.local_mismatch = mismatch
            self._failures_out.append(text)
        print(f"parla.mpi: {text}; stopping every rank", file=sys.stderr, flush=True)
        try:
            self.runtime.cancel_all()
        except RuntimeError:
            pass

    def _remote_failure(self, text: str) -> None:
        with self._lock:
            if self.failure is not None:
                return
            self.failure = text
        print(f"parla.mpi: rank {self.rank} stops: {text}", file=sys.stderr, flush=True)
        try:
            self.runtime.cancel_all()
        except RuntimeError:
            pass

    def _send_failures(self) -> None:
        with self._lock:
            texts, self._failures_out = self._failures_out, []
        for text in texts:
            payload = text.encode("utf-8", "replace")[:_FAILURE_BYTES]
            for r in range(self.size):
                if r != self.rank:
                    self._failure_sends.append(self.ctrl.Isend([payload, self.MPI.BYTE], dest=r, tag=TAG_FAILURE))

    def poll_failure(self) -> bool:
        """Tests the control channel once; True when another rank's failure arrived (it is recorded)."""
        MPI = self.MPI
        if self._failure_req is None:
            self._failure_req = self.ctrl.Irecv([self._failure_buf, MPI.BYTE], source=MPI.ANY_SOURCE,
                                                tag=TAG_FAILURE)
        status = MPI.Status()
        if self._failure_req.Test(status):
            n = status.Get_count(MPI.BYTE)
            self._failure_req = None
            self._remote_failure(bytes(self._failure_buf[:n]).decode("utf-8", "replace"))
            return True
        return False

    def _release_all(self) -> None:
        """After a failure: every pending operation is abandoned and its gate spawned (the tasks awaiting them
        finish; cancel_all has cancelled what had not started)."""
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
        for op in queued:
            op.failed = True
            self._open(op)
        for req, op in self._active:
            # Left pending, not cancelled (MPI_Cancel crashes Open MPI 4.1 on requests being matched); the job
            # ends with MPI_Abort after a failure, so nothing waits for them.
            self._abandoned.append((req, op.buf))
            op.failed = True
            self._open(op)
        self._active = []

    # -- the progress task ----------------------------------------------------------------------------
    def run(self) -> None:
        """Body of the progress task: runs until the program has left its block and every communication task
        has posted its operation and seen it complete (or until a failure, once the block is left)."""
        try:
            self._loop()
        except BaseException as e:  # a failure of MPI itself: every rank must hear of it
            self.error = e
            self.report_failure(f"rank {self.rank}: the MPI progress task failed: {type(e).__name__}: {e}")
            self._send_failures()
            self._release_all()
            raise

    def _loop(self) -> None:
        MPI = self.MPI
        delay = 0.0
        while True:
            busy = False
            with self._lock:
                new = list(self._queue)
                self._queue.clear()
                failing = self.failure is not None
                finished = self.ended and self.posted >= self.expected
            if self._failures_out:
                self._send_failures()
                busy = True
            if not failing:
                for op in new:
                    op.t_post = time.monotonic_ns()
                    comm = op.comm
                    if op.kind == "send":
                        req = comm.Isend(op.buf, dest=op.peer, tag=op.tag)
                    else:
                        req = comm.Irecv(op.buf, source=op.peer, tag=op.tag)
                    self._active.append((req, op))
                    busy = True
            else:
                with self._lock:
                    self._queue.extendleft(reversed(new))
            if self._active and not failing:
                done = MPI.Request.Testsome([r for r, _ in self._active])
                if done:
                    busy = True
                    now = time.monotonic_ns()
                    finished_ops = [self._active[i][1] for i in done]
                    keep = set(done)
                    self._active = [a for i, a in enumerate(self._active) if i not in keep]
                    for op in finished_ops:
                        op.t_done = now
                        if op.did < 0:
                            if op.kind == "send":
                                self.signals_sent += 1
                            else:
                                self.signals_received += 1
                        elif op.kind == "send":
                            self.bytes_sent += op.nbytes
                            self.messages_sent += 1
                        else:
                            self.bytes_received += op.nbytes
                            self.messages_received += 1
                        op.buf = None
                        if op.did >= 0:
                            self.log.append(op)
                        self._open(op)
            if self.poll_failure():
                failing = True
            if self._check_program(busy):
                busy = True
            if failing:
                self._release_all()
                if self.ended:
                    self._check_program(True)
                    return
            elif finished and not self._active:
                with self._lock:
                    done = not self._queue
                if done:
                    self._check_program(True)   # publishes the final state
                    return
            if self._failure_sends:
                self._failure_sends = [r for r in self._failure_sends if not r.Test()]
            if self.stall_warn > 0 and self._active:
                self._warn_stalled()
            if busy:
                delay = 0.0
                continue
            delay = min(max(delay * 2, 50e-6), 1e-3)
            time.sleep(delay)

    def _warn_stalled(self) -> None:
        now = time.monotonic_ns()
        if now < self._stall_check:
            return
        self._stall_check = now + 1e9  # at most once a second
        for _, op in self._active:
            if id(op) not in self._warned and now - op.t_post > self.stall_warn * 1e9:
                self._warned.add(id(op))
                print(f"parla.mpi: rank {self.rank}: task {op.name!r} has waited {self.stall_warn:g} s for MPI "
                      f"({'the receive from' if op.kind == 'recv' else 'the send to'} rank {op.peer}, tag {op.tag}); "
                      f"probably a long task on rank {op.peer} or a slow network (ranks that run different programs are "
                      f"stopped with ProgramMismatchError)",
                      file=sys.stderr, flush=True)

    def end(self, final: bool = False) -> None:
        """The program has left its Parla block (``final``: without an exception, so its steps are complete):
        the progress task ends once the communication is done."""
        with self._lock:
            self.ended = True
            self._final = final

    # -- the program check (progress task, then agree) ------------------------------------------------
    def _check_program(self, now_please: bool) -> bool:
        """Receives the peers' program states, publishes this rank's when due, compares (see
        parla.mpi._check); a difference is reported as a failure. Returns whether a message moved. At most
        every 10 ms unless ``now_please``."""
        now = time.monotonic()
        if not now_please and now < self._next_check:
            return False
        self._next_check = now + 0.01
        MPI = self.MPI
        moved = False
        status = MPI.Status()
        while self.ctrl.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_STATE, status=status):
            buf = bytearray(STATE_BYTES)
            source = status.Get_source()
            self.ctrl.Recv([buf, MPI.BYTE], source=source, tag=TAG_STATE)
            self.peers.received(source, *unpack_state(bytes(buf)))
            moved = True
        with self._lock:
            final = self._final
        count, digest = self.program.state()
        if final and not self._final_sent:
            self._final_sent = True
            self.peers.final = True
            self._publish(count, digest, True)
            moved = True
        elif not self._final_sent and count != self._published and now >= self._next_publish:
            self._publish(count, digest, False)
            self._next_publish = now + self.check_interval
        if self._state_sends:
            self._state_sends = [(r, b) for r, b in self._state_sends if not r.Test()]
        text = self.peers.judge()
        if text is not None and self.failure is None:
            self.report_failure(f"rank {self.rank}: {text}", mismatch=True)
        return moved

    def _publish(self, count: int, digest: int, final: bool) -> None:
        payload = pack_state(count, digest, final)
        self._published = count
        for r in range(self.size):
            if r != self.rank:
                self._state_sends.append((self.ctrl.Isend([payload, self.MPI.BYTE], dest=r, tag=TAG_STATE),
                                          payload))

    # -- after the progress task (main thread) --------------------------------------------------------
    def agree(self, failure_timeout: float) -> Tuple[List[str], Optional[Tuple[int, Dict[int, str]]]]:
        """Collective over the ranks, once each has left its block and its progress task has ended: returns the
        failure texts of every rank (empty when all succeeded) and, when the ranks' programs differ, the first
        differing step and what it is on each rank (see :func:`parla.mpi._check.locate`). Before the ranks
        meet it keeps watching the control channel and comparing programs; once a failure is known, ranks
        that do not arrive within ``failure_timeout`` seconds stop the job (MPI_Abort) after saying so."""
        barrier = self.ctrl.Ibarrier()
        deadline = None
        while not barrier.Test():
            self.poll_failure()
            self._check_program(False)
            if self._failures_out:
                self._send_failures()
            if self._failure_sends:
                self._failure_sends = [r for r in self._failure_sends if not r.Test()]
            if self.failure is not None and deadline is None:
                deadline = time.monotonic() + failure_timeout
            if deadline is not None and time.monotonic() > deadline:
                print(f"parla.mpi: rank {self.rank}: after the failure ({self.failure}), some rank did not reach "
                      f"the end of its Parla block within {failure_timeout:g} s: aborting the job",
                      file=sys.stderr, flush=True)
                self.comm.Abort(1)
            time.sleep(1e-3)
        self._check_program(True)
        count, _ = self.program.state()
        info = self.ctrl.allgather((self.failure if self.local_failure else None, self.local_mismatch, count,
                                    self.program.base))
        found = [t for t, _, _, _ in info if t]
        if not found and self.failure is not None:
            found = [self.failure]
        real_failure = any(t and not mismatch for t, mismatch, _, _ in info)
        mismatch = locate(self.ctrl, self.program, [c for _, _, c, _ in info], [b for _, _, _, b in info],
                          count_differences=not real_failure)
        if not found and mismatch is None:
            self.close_channels()
        return found, mismatch

    def close_channels(self) -> None:
        """Cancels the pending control receive and frees the duplicated communicators (success path)."""
        req, self._failure_req = self._failure_req, None
        if req is not None:
            try:
                req.Cancel()
                req.Wait()
            except Exception:
                pass
        for r in self._failure_sends:
            r.Wait()
        self._failure_sends = []
        for r, _ in self._state_sends:
            r.Wait()
        self._state_sends = []
        self.data.Free()
        self.signals.Free()
        self.ctrl.Free()
