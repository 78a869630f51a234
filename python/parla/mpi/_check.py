"""Checking that every rank runs the same distributed program.

Every rank records its distributed program as a sequence of *steps*: entering the context, creating a
:class:`~parla.mpi.DistArray`, spawning a distributed task (its name, running rank, accesses and
dependencies), a fetch. A running digest (BLAKE2b, 64 bits) is chained over the steps, so ``H(i)``, the
digest after ``i`` steps, is equal on two ranks exactly when (up to a hash collision) their first ``i``
steps are.

While the context runs, the progress task of each rank publishes ``(count, H(count))`` to every other rank
on the control channel at most every ``PARLA_MPI_CHECK_INTERVAL`` seconds (default 0.2) when it changed,
and once more, marked *final*, when the program leaves its block. A rank that receives ``(c, h)`` from a
peer compares it with its own ``H(c)`` as soon as it has made ``c`` steps. A difference is a proof that the
programs differ, not a guess from a timeout: the rank reports a failure, which stops every rank (see
:mod:`parla.mpi._comm`). Steps a peer has after the other's final count are a difference as well (different
numbers of steps). If the ranks agree on every common step, the messages they exchange match (transfers and
signals are derived from the steps alone), so no rank waits for ever on a message because of the program;
long tasks are never mistaken for a divergence.

At the end of the block the ranks meet (``Engine.agree``) and, when the digests differ, locate the first
differing step by a collective binary search over their digest histories (one 8-byte allgather per
halving), and every rank raises the same :class:`ProgramMismatchError` naming that step on each rank.

Memory: a rank keeps the digests and the step records from the last step every peer has confirmed onwards
(confirmed steps are dropped), so the history is as long as the lag between the ranks.
"""
from __future__ import annotations

import hashlib
import struct
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["ProgramLog", "ProgramMismatchError", "describe", "STATE_FORMAT"]

STATE_FORMAT = "<qQq"    # count, digest, final (0/1): one state message on the control channel
_TRIM_AT = 4096          # drop confirmed history in slices of at least this many steps


class ProgramMismatchError(RuntimeError):
    """Raised on every rank when the ranks did not run the same distributed program (they created different
    DistArrays, or spawned different tasks, in a different order, or a different number of them).

    ``step``: the index (from 0, the context's entry) of the first step that differs; ``steps``: for each
    rank, what that step is there (``"task T[3] on rank 1 (...)"``, or ``"the end of the Parla block"``)."""

    def __init__(self, step: int, steps: Dict[int, str]) -> None:
        groups: Dict[str, List[int]] = {}
        for r in sorted(steps):
            groups.setdefault(steps[r], []).append(r)
        parts = [f"{'ranks' if len(rs) > 1 else 'rank'} {', '.join(map(str, rs))}: {what}"
                 for what, rs in sorted(groups.items(), key=lambda kv: kv[1])]
        super().__init__(f"the ranks do not run the same distributed program: step {step} (from the start of "
                         f"the context) differs: {'; '.join(parts)} (every rank must create the same "
                         f"DistArrays and spawn the same tasks, with the same accesses and dependencies, in "
                         f"the same order)")
        self.step = step
        self.steps = dict(steps)


def _names(items: Sequence[Tuple[int, str]]) -> str:
    return ", ".join(name for _, name in items)


def describe(record: Optional[Tuple[Any, ...]]) -> str:
    """One step's record as text (None: past the end of this rank's steps)."""
    if record is None:
        return "the end of the Parla block"
    kind = record[0]
    if kind == "enter":
        _, number, next_id, size = record
        return (f"entering distributed context #{number} on {size} ranks after creating {next_id} "
                f"DistArrays")
    if kind == "array":
        _, did, name, owner, shape, dtype = record
        return f"DistArray {name} (id {did}, owner {owner}, shape {shape}, dtype {dtype})"
    if kind == "task":
        _, name, where, reads, outs, inouts, deps = record
        parts = [f"{label} {_names(items)}" for label, items in (("input", reads), ("output", outs),
                                                                 ("inout", inouts)) if items]
        if deps:
            parts.append("dependencies " + ", ".join(dep[-1] for dep in deps))
        return f"task {name} on rank {where}" + (f" ({'; '.join(parts)})" if parts else "")
    if kind == "fetch":
        _, did, name, targets = record
        return f"fetch of {name} (id {did}) to rank(s) {', '.join(map(str, targets))}"
    return repr(record)


class ProgramLog:
    """The steps of this rank's distributed program and the running digests ``H(i)``.

    :meth:`add` from the program's thread (the main thread): it only appends the step, so that spawning
    stays cheap. The digests are computed on demand by the one thread that reads them (:meth:`state`,
    :meth:`digest`, :meth:`record`, :meth:`trim`: the progress task while the context runs, then the main
    thread in ``Engine.agree``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0                       # steps recorded
        self.base = 0                        # first step still kept (history before it was dropped)
        self._digests: List[int] = [0]       # H(base), ..., H(base + len - 1): computed so far
        self._records: List[Tuple[Any, ...]] = []   # steps base, ..., count - 1

    def add(self, record: Tuple[Any, ...]) -> None:
        """Appends one step (a tuple of str, int and tuples of them: its repr is the same on every rank)."""
        with self._lock:
            self._records.append(record)
            self.count += 1

    def _hash_to(self, i: int) -> None:
        # Only the reading thread hashes and trims, so the records read here stay in place; add() appends.
        digests, records = self._digests, self._records
        done = self.base + len(digests) - 1
        prev = digests[-1]
        while done < i:
            h = hashlib.blake2b(prev.to_bytes(8, "little") + repr(records[done - self.base]).encode(
                "utf-8", "replace"), digest_size=8).digest()
            prev = int.from_bytes(h, "little")
            digests.append(prev)
            done += 1

    def state(self) -> Tuple[int, int]:
        """(count, H(count))."""
        count = self.count
        self._hash_to(count)
        return count, self._digests[count - self.base]

    def digest(self, i: int) -> Optional[int]:
        """H(i), or None when step i is not (or no longer) kept."""
        if not self.base <= i <= self.count:
            return None
        self._hash_to(i)
        return self._digests[i - self.base]

    def record(self, j: int) -> Optional[Tuple[Any, ...]]:
        """The record of step j, or None past the last step (or before the kept history)."""
        if self.base <= j < self.count:
            return self._records[j - self.base]
        return None

    def trim(self, i: int) -> None:
        """Drops the history before step i (every peer has confirmed it), in large slices."""
        i = min(i, self.base + len(self._digests) - 1)
        if i - self.base >= _TRIM_AT:
            k = i - self.base
            with self._lock:
                del self._records[:k]
            del self._digests[:k]
            self.base = i


def pack_state(count: int, digest: int, final: bool) -> bytes:
    return struct.pack(STATE_FORMAT, count, digest, 1 if final else 0)


def unpack_state(payload: bytes) -> Tuple[int, int, bool]:
    count, digest, final = struct.unpack(STATE_FORMAT, payload)
    return int(count), int(digest), bool(final)


STATE_BYTES = struct.calcsize(STATE_FORMAT)


class PeerStates:
    """What this rank knows of its peers' programs, and the comparisons (called by the progress task, then by
    ``Engine.agree``: one thread at a time)."""

    def __init__(self, log: ProgramLog, rank: int, size: int) -> None:
        self.log = log
        self.rank = rank
        self.pending: Dict[int, List[Tuple[int, int, bool]]] = {r: [] for r in range(size) if r != rank}
        self.confirmed: Dict[int, int] = {r: 0 for r in range(size) if r != rank}
        self.final_of: Dict[int, int] = {}   # peer -> its final step count
        self.final = False                   # this rank's program has left its block successfully

    def received(self, peer: int, count: int, digest: int, final: bool) -> None:
        self.pending[peer].append((count, digest, final))

    def judge(self) -> Optional[str]:
        """Compares what can be compared now. Returns a text naming the difference (for the failure report),
        or None."""
        mine, _ = self.log.state()
        for peer, states in self.pending.items():
            while states:
                c, h, final = states[0]
                if c > mine:
                    if self.final:
                        return (f"rank {peer} has made {c} steps of the distributed program, more than the {mine} of "
                                f"rank {self.rank}'s whole Parla block")
                    break
                if self.log.digest(c) != h:
                    return (f"ranks {min(self.rank, peer)} and {max(self.rank, peer)} differ in the first {c} steps "
                            f"of the distributed program")
                states.pop(0)
                self.confirmed[peer] = max(self.confirmed[peer], c)
                if final:
                    self.final_of[peer] = c
            end = self.final_of.get(peer)
            if end is not None and mine > end:
                return (f"rank {peer} left its Parla block after {end} steps of the distributed program; rank "
                        f"{self.rank} has made {mine}")
        if self.confirmed:
            self.log.trim(min(self.confirmed.values()))
        return None


def locate(comm: Any, log: ProgramLog, counts: Sequence[int], bases: Sequence[int],
           count_differences: bool) -> Optional[Tuple[int, Dict[int, str]]]:
    """Collective (every rank of comm, with the same counts and bases gathered from every rank): the first
    step on which the ranks differ and what it is on each rank, or None when they agree. Differences in the
    number of steps only count when ``count_differences`` (not after a failure, where ranks stop early)."""
    m = min(counts)
    lo = max(bases)
    at_m = comm.allgather(log.digest(m))
    if len(set(at_m)) == 1:
        if not count_differences or len(set(counts)) == 1:
            return None
        j = m                     # the first step some ranks made and others did not
    else:
        lo_i, hi_i = lo, m        # H(lo_i) equal on every rank, H(hi_i) not
        while hi_i - lo_i > 1:
            mid = (lo_i + hi_i) // 2
            if len(set(comm.allgather(log.digest(mid)))) == 1:
                lo_i = mid
            else:
                hi_i = mid
        j = hi_i - 1
    texts = comm.allgather(describe(log.record(j)))
    return j, {r: t for r, t in enumerate(texts)}
