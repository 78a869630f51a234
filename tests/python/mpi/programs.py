"""Distributed programs run under mpirun by tests/python/test_mpi.py (one mpirun per scenario group).

    mpirun -n 2 python tests/python/mpi/programs.py suite
    mpirun -n 4 --oversubscribe python tests/python/mpi/programs.py failure

Each rank prints one line per scenario: ``OK <scenario> rank=<r> <details>`` or ``FAIL <scenario> rank=<r>
<error>``; the test reads them. The reference of every scenario is the same computation in one process.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "examples"))

from parla import TaskSpace  # noqa: E402
from parla import mpi  # noqa: E402
from parla.mpi import (BlockCyclic, DistArray, Parla, ProgramMismatchError, RemoteTaskError,  # noqa: E402
                       process_grid, spawn)

RANK = mpi.rank()
SIZE = mpi.size()


def emit(line):
    """Prints a result line, and appends it to $PARLA_MPI_TEST_OUT/rank<r>.txt when set (mpirun interleaves the
    ranks' output, so the tests read these files)."""
    print(line, flush=True)
    out = os.environ.get("PARLA_MPI_TEST_OUT")
    if out:
        with open(os.path.join(out, f"rank{RANK}.txt"), "a") as f:
            f.write(line + "\n")


def report(name, fn):
    try:
        details = fn()
        emit(f"OK {name} rank={RANK} {json.dumps(details)}")
    except Exception as e:
        emit(f"FAIL {name} rank={RANK} {type(e).__name__}: {e}")
        traceback.print_exc()


# --- owner computes, one send and one receive ---------------------------------------------------------------

def basic():
    """a on rank 0, b on the last rank: the task writing b runs there and receives a once; a second reader
    reuses the received copy; a write of a makes the next reader receive the new version."""
    last = SIZE - 1
    with Parla(n_workers=1) as ctx:
        a = DistArray(lambda: np.arange(4.0), owner=0, shape=(4,), dtype=float, name="a")
        b = DistArray(np.zeros(4), owner=last, name="b")
        T = TaskSpace("T")

        @spawn(T[0], inout=[a])
        def inc():
            a.array[...] += 1

        @spawn(T[1], input=[a], inout=[b])
        def add():
            b.array[...] += 2 * a.array

        @spawn(T[2], [T[1]], input=[a], inout=[b])
        def add_again():
            b.array[...] += a.array

        @spawn(T[3], inout=[a])
        def inc_again():
            a.array[...] += 10

        @spawn(T[4], input=[a], inout=[b])
        def add_new():
            b.array[...] += a.array
        mpi.fetch(b, rank=0)
    expected = 3 * (np.arange(4.0) + 1) + (np.arange(4.0) + 11)
    assert ctx.stats["transfers_total"] == 3, ctx.stats   # a@1 and a@2 to the last rank, b to rank 0
    if RANK in (0, last):
        np.testing.assert_array_equal(b.numpy(), expected)
    if RANK == last:
        assert ctx.stats["messages_received"] == 2, ctx.stats
        assert ctx.stats["tasks_run"] == 3, ctx.stats
    if RANK == 0:
        assert ctx.stats["messages_sent"] == 2, ctx.stats
        assert ctx.stats["tasks_run"] == 2, ctx.stats
    if RANK not in (0, last):
        try:
            b.numpy()
        except RuntimeError as e:
            assert "does not hold the current version" in str(e), e
        else:
            raise AssertionError("numpy() on a rank without the current version did not raise")
    return ctx.stats


# --- tiled Cholesky, 2-D block-cyclic -------------------------------------------------------------------------

def cholesky():
    import cholesky as example  # examples/cholesky.py
    n, block = 384, 64
    result = example.run_mpi(n, block, workers=1, check=True, seed=3)
    if RANK == 0:
        assert result["residual"] < 1e-12, result
    return {k: result[k] for k in ("tasks_run", "messages_sent", "bytes_sent", "residual") if k in result}


def cholesky_equal():
    """The distributed factor equals the one-process factor bit for bit (same kernels, same update order)."""
    import cholesky as example
    n, block = 320, 64
    tiles = example.distributed_tiles(n, block, 5)
    with Parla(n_workers=1) as ctx:
        example.factor(tiles, spawn=spawn)
        mpi.fetch(tiles, rank=0)
    if RANK == 0:
        mine = example.from_tiles([[t.numpy() if t is not None else None for t in row] for row in tiles], n)
        one, _ = example.run(example.spd_from_tiles(n, block, 5), block, workers=2)
        assert np.array_equal(mine, one), float(np.abs(mine - one).max())
    return {"tasks_run": ctx.stats["tasks_run"], "messages_sent": ctx.stats["messages_sent"]}


def cholesky_virtual_gpus():
    """Each rank with 2 virtual GPUs, tasks placed on [cpu, gpu]: tiles move between a rank's devices (its
    engine) and between ranks (through host memory); the factor is still bit-equal to one process."""
    import cholesky as example
    from parla.devices import cpu, gpu
    n, block = 256, 64
    tiles = example.distributed_tiles(n, block, 2)
    with Parla(n_workers=1, virtual_gpus=2) as ctx:
        example.factor(tiles, placement=[cpu, gpu], spawn=spawn)
        mpi.fetch(tiles, rank=0)
    if RANK == 0:
        mine = example.from_tiles([[t.numpy() if t is not None else None for t in row] for row in tiles], n)
        one, _ = example.run(example.spd_from_tiles(n, block, 2), block, workers=2)
        assert np.array_equal(mine, one), float(np.abs(mine - one).max())
    return {"tasks_run": ctx.stats["tasks_run"], "messages_sent": ctx.stats["messages_sent"]}


# --- Jacobi on 2-D block-cyclic tiles with halo edges -------------------------------------------------------

def jacobi_reference(grid, iterations):
    u = grid.copy()
    for _ in range(iterations):
        u[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])
    return u


def make_grid(n, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.random((n, n))
    g[0, :], g[-1, :], g[:, 0], g[:, -1] = 1.0, -1.0, 0.5, -0.5
    return g


def jacobi():
    n, tiles_per_side, iterations = 50, 4, 12
    grid = make_grid(n, seed=1)
    bounds = [k * n // tiles_per_side for k in range(tiles_per_side + 1)]
    nt = tiles_per_side
    owner = BlockCyclic(*process_grid(SIZE))
    rows = lambda i: slice(bounds[i], bounds[i + 1])
    U = {(i, j): DistArray(lambda i=i, j=j: grid[rows(i), rows(j)].copy(), owner=owner(i, j),
                           shape=(bounds[i + 1] - bounds[i], bounds[j + 1] - bounds[j]), dtype=float,
                           name=f"U[{i},{j}]")
         for i in range(nt) for j in range(nt)}
    # Edges of each tile (top, bottom, left, right), written by the tile's owner, read by its neighbours.
    E = {}
    for (i, j), u in U.items():
        h, w = u.shape
        for side, shape in (("top", (w,)), ("bottom", (w,)), ("left", (h,)), ("right", (h,))):
            E[i, j, side] = DistArray(None, owner=u.owner, shape=shape, dtype=float, name=f"E[{i},{j},{side}]")

    def spawn_edges(t, i, j):
        u = U[i, j]
        out = [E[i, j, s] for s in ("top", "bottom", "left", "right")]

        @spawn(EDGES[t, i, j], input=[u], output=out)
        def edges(u=u, out=out):
            a = u.array
            out[0].array[...] = a[0, :]
            out[1].array[...] = a[-1, :]
            out[2].array[...] = a[:, 0]
            out[3].array[...] = a[:, -1]

    def spawn_sweep(t, i, j):
        u = U[i, j]
        halo = {}
        if i > 0:
            halo["up"] = E[i - 1, j, "bottom"]
        if i < nt - 1:
            halo["down"] = E[i + 1, j, "top"]
        if j > 0:
            halo["left"] = E[i, j - 1, "right"]
        if j < nt - 1:
            halo["right"] = E[i, j + 1, "left"]
        r0, r1, c0, c1 = bounds[i], bounds[i + 1], bounds[j], bounds[j + 1]

        @spawn(SWEEP[t, i, j], input=list(halo.values()), inout=[u])
        def sweep(u=u, halo=halo):
            a = u.array
            p = np.zeros((a.shape[0] + 2, a.shape[1] + 2))
            p[1:-1, 1:-1] = a
            if "up" in halo:
                p[0, 1:-1] = halo["up"].array
            if "down" in halo:
                p[-1, 1:-1] = halo["down"].array
            if "left" in halo:
                p[1:-1, 0] = halo["left"].array
            if "right" in halo:
                p[1:-1, -1] = halo["right"].array
            new = 0.25 * (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:])
            # Only cells inside the global boundary change.
            ri = slice(1 if r0 == 0 else 0, (r1 - r0) - (1 if r1 == n else 0))
            ci = slice(1 if c0 == 0 else 0, (c1 - c0) - (1 if c1 == n else 0))
            a[ri, ci] = new[ri, ci]

    with Parla(n_workers=1) as ctx:
        EDGES = TaskSpace("edges")
        SWEEP = TaskSpace("sweep")
        for t in range(iterations):
            for i in range(nt):
                for j in range(nt):
                    spawn_edges(t, i, j)
            for i in range(nt):
                for j in range(nt):
                    spawn_sweep(t, i, j)
        mpi.fetch(list(U.values()), rank=0)
    if RANK == 0:
        out = np.empty((n, n))
        for (i, j), u in U.items():
            out[rows(i), rows(j)] = u.numpy()
        ref = jacobi_reference(grid, iterations)
        assert np.array_equal(out, ref), float(np.abs(out - ref).max())
    return {"tasks_run": ctx.stats["tasks_run"], "messages_sent": ctx.stats["messages_sent"]}


# --- random programs against a sequential model -------------------------------------------------------------

def random_program(seed, n_arrays=10, n_tasks=80, owners=None):
    """Random owners, random reads and writes, sometimes rank=; the same program run sequentially with NumPy
    is the model. Every array is fetched to every rank at the end and compared."""
    rng = np.random.default_rng(seed)
    owners = owners if owners is not None else list(range(SIZE))
    owner_of = [int(rng.choice(owners)) for _ in range(n_arrays)]
    init = [rng.random(3) for _ in range(n_arrays)]
    program = []
    for k in range(n_tasks):
        reads = sorted(set(int(x) for x in rng.choice(n_arrays, size=int(rng.integers(0, 4)), replace=True)))
        mode = rng.choice(["inout", "output", "none"], p=[0.6, 0.3, 0.1])
        target = int(rng.integers(n_arrays))
        reads = [r for r in reads if r != target]
        where = int(rng.integers(SIZE)) if rng.random() < 0.2 else None
        program.append((k, reads, str(mode), target, where))

    model = [x.copy() for x in init]
    for k, reads, mode, target, where in program:
        s = sum((model[r] for r in reads), np.zeros(3))
        if mode == "inout":
            model[target] = model[target] * 0.5 + s + k
        elif mode == "output":
            model[target] = s + k

    with Parla(n_workers=1) as ctx:
        D = [DistArray(lambda x=x: x.copy(), owner=owner_of[i], shape=(3,), dtype=float, name=f"R{i}")
             for i, x in enumerate(init)]
        T = TaskSpace("T")
        sink = []
        for k, reads, mode, target, where in program:
            ins = [D[r] for r in reads]
            if mode == "inout":
                @spawn(T[k], rank=where, input=ins, inout=[D[target]])
                def body(k=k, ins=ins, out=D[target]):
                    out.array[...] = out.array * 0.5 + sum((x.array for x in ins), np.zeros(3)) + k
            elif mode == "output":
                @spawn(T[k], rank=where, input=ins, output=[D[target]])
                def body(k=k, ins=ins, out=D[target]):
                    out.array[...] = sum((x.array for x in ins), np.zeros(3)) + k
            else:  # a read-only task: it runs on the owner of its first input (or rank=, or 0)
                @spawn(T[k], rank=where, input=ins)
                def body(k=k, ins=ins):
                    sink.append(float(sum(x.array.sum() for x in ins)))
        mpi.fetch(D)
    for i, d in enumerate(D):
        np.testing.assert_allclose(d.numpy(), model[i], rtol=1e-13, atol=0, err_msg=f"array R{i}, seed {seed}")
    return {"seed": seed, "tasks_run": ctx.stats["tasks_run"], "transfers": ctx.stats["transfers_total"]}


def randoms():
    out = [random_program(seed) for seed in range(6)]
    return {"programs": len(out), "transfers": sum(o["transfers"] for o in out)}


def owns_nothing():
    """The last rank owns no data. It runs nothing, then one task (rank=) that reads remote data."""
    owners = list(range(SIZE - 1)) or [0]
    r = random_program(11, owners=owners)
    with Parla(n_workers=1) as ctx:
        x = DistArray(lambda: np.full(2, 7.0), owner=0, shape=(2,), dtype=float, name="x")

        @spawn(rank=SIZE - 1, input=[x])
        def look():
            assert x.array[0] == 7.0
    if RANK == SIZE - 1:
        assert ctx.stats["tasks_run"] == 1 and ctx.stats["messages_received"] == 1, ctx.stats
    return {"random": r, "stats": {k: ctx.stats[k] for k in ("tasks_run", "messages_received")}}


def nothing_at_all():
    """The last rank owns nothing and is given nothing to do: it takes part and ends with the others."""
    with Parla(n_workers=1) as ctx:
        D = [DistArray(lambda i=i: np.full(3, float(i)), owner=i % max(1, SIZE - 1), shape=(3,), dtype=float)
             for i in range(4)]
        for k in range(8):
            @spawn(input=[D[(k + 1) % 4]], inout=[D[k % 4]])
            def body(k=k):
                D[k % 4].array[...] += D[(k + 1) % 4].array
    if RANK == SIZE - 1 and SIZE > 1:
        assert ctx.stats["tasks_run"] == 0 and ctx.stats["messages_sent"] == 0 and \
            ctx.stats["messages_received"] == 0, ctx.stats
    return ctx.stats


def trace():
    """A traced run: one trace and one message log per rank, merged into one timeline with a flow per message."""
    base = os.environ["PARLA_MPI_TEST_TRACE"]
    with Parla(n_workers=1, trace=base) as ctx:
        a = DistArray(lambda: np.ones(1000), owner=0, shape=(1000,), dtype=float, name="a")
        b = [DistArray(lambda: np.zeros(1000), owner=r, shape=(1000,), dtype=float, name=f"b{r}")
             for r in range(SIZE)]
        for r in range(SIZE):
            @spawn(input=[a], inout=[b[r]])
            def add(r=r):
                b[r].array[...] += a.array
    return {"messages_sent": ctx.stats["messages_sent"], "messages_received": ctx.stats["messages_received"]}


# --- explicit dependencies across ranks ----------------------------------------------------------------------

def _order_file(name):
    out = os.environ.get("PARLA_MPI_TEST_OUT")
    if not out:
        raise RuntimeError("this scenario needs PARLA_MPI_TEST_OUT (a directory every rank can write)")
    return os.path.join(out, name)


def remote_deps():
    """Tasks on different ranks ordered only by dependencies= (no data between them): a chain across the ranks
    (each task sleeps less than the one before, so without the dependencies they would finish out of order),
    a dependency named before its task is spawned (on another rank), and a TaskSpace slice spanning every rank.
    Each task appends its name to a file every rank shares; rank 0 checks the order afterwards."""
    import time
    path = _order_file("order.txt")
    last = SIZE - 1

    def note(what):
        with open(path, "a") as f:
            f.write(what + "\n")
    k_max = 3 * SIZE
    with Parla(n_workers=1) as ctx:
        T, U, V = TaskSpace("T"), TaskSpace("U"), TaskSpace("V")
        for k in range(k_max):
            @spawn(T[k], [T[k - 1]], rank=k % SIZE)
            def chain(k=k):
                time.sleep(0.004 * (k_max - k))
                note(f"T{k}")

        @spawn(U[0], [U[1]], rank=last)     # U[1] is spawned below, on rank 0
        def after():
            note("U0")

        @spawn(U[1], [T[k_max - 1]], rank=0)
        def before():
            time.sleep(0.05)
            note("U1")

        for i in range(SIZE):
            @spawn(V[i], [U[0]], rank=i)
            def part(i=i):
                time.sleep(0.003 * (SIZE - i))
                note(f"V{i}")

        @spawn(V[SIZE], [V[0:SIZE]], rank=last)
        def join():
            note("V*")
    # Signals: the chain's k_max - 1 cross-rank edges, U[1] -> U[0] and T[last] -> U[1] when they are on
    # different ranks, U[0] -> V[i] off the last rank, and V[i] -> V* off the last rank.
    expected = (k_max - 1 + (last != 0) + ((k_max - 1) % SIZE != 0) + 2 * last) if SIZE > 1 else 0
    if RANK == 0:
        with open(path) as f:
            order = f.read().split()
        assert order[:k_max] == [f"T{k}" for k in range(k_max)], order
        assert order[k_max:k_max + 2] == ["U1", "U0"], order
        assert sorted(order[k_max + 2:k_max + 2 + SIZE]) == sorted(f"V{i}" for i in range(SIZE)), order
        assert order[k_max + 2 + SIZE:] == ["V*"], order
    return {"signals_sent": ctx.stats["signals_sent"], "signals_received": ctx.stats["signals_received"],
            "expected_signals": expected}


def two_contexts():
    """A successful context followed by a second one: the DistArrays of the first keep their values, owners
    and versions, and the second moves them as the first would have."""
    last = SIZE - 1
    with Parla(n_workers=1) as first:
        a = DistArray(lambda: np.arange(3.0), owner=0, shape=(3,), dtype=float, name="a")
        b = DistArray(np.zeros(3), owner=last, name="b")

        @spawn(input=[a], inout=[b])
        def add():
            b.array[...] += a.array
    with Parla(n_workers=1) as second:
        @spawn(input=[b], inout=[a])        # on rank 0: receives b's version 1 from the last rank
        def add_back():
            a.array[...] += 2 * b.array
        mpi.fetch(a)
    np.testing.assert_array_equal(a.numpy(), 3 * np.arange(3.0))
    assert a.version == 1 and b.version == 1, (a, b)
    if SIZE > 1 and RANK == 0:
        assert first.stats["messages_sent"] == 1 and second.stats["messages_received"] == 1, \
            (first.stats, second.stats)
    return {"first": first.stats["tasks_run"], "second": second.stats["tasks_run"]}


def nested():
    """A task body cannot spawn distributed tasks, create DistArrays or fetch (RuntimeError naming the task); it
    can spawn tasks of its own rank with parla.spawn and await them."""
    import parla
    errors = []
    with Parla(n_workers=2) as ctx:
        x = DistArray(lambda: np.ones(2), owner=0, shape=(2,), dtype=float, name="x")
        N = TaskSpace("N")

        @spawn(N[0], inout=[x])
        async def outer():
            for attempt in (lambda: mpi.spawn(input=[x])(lambda: None), lambda: DistArray(np.zeros(1)),
                            lambda: mpi.fetch(x)):
                try:
                    attempt()
                except RuntimeError as e:
                    errors.append(str(e))
            inner = parla.spawn()(lambda: 41.0)
            x.array[...] += await inner
        mpi.fetch(x)
    np.testing.assert_array_equal(x.numpy(), np.full(2, 42.0))
    if RANK == 0:
        assert len(errors) == 3, errors
        for e in errors:
            assert e.startswith("task N[0] calls parla.mpi."), e
            assert "parla.spawn" in e, e
    return {"errors": len(errors), "tasks_run": ctx.stats["tasks_run"]}


# --- ranks running different programs ---------------------------------------------------------------------------

def mismatch_catch(program):
    """Runs program(); every rank must raise ProgramMismatchError (printed as a CAUGHT line)."""
    try:
        program()
    except ProgramMismatchError as e:
        emit(f"CAUGHT rank={RANK} ProgramMismatchError step={e.step} {e}")
    except BaseException as e:
        emit(f"CAUGHT rank={RANK} {type(e).__name__} {e}")
    else:
        emit(f"CAUGHT rank={RANK} nothing")


def mismatch_wait():
    """The last rank spawns one task more than the others in the middle of the program, a task that needs a
    message no rank sends, and waits for it: it would wait for ever; every rank stops instead."""
    last = SIZE - 1
    with Parla(n_workers=1):
        x = DistArray(lambda: np.ones(4), owner=0, shape=(4,), dtype=float, name="x")
        y = DistArray(lambda: np.zeros(4), owner=last, shape=(4,), dtype=float, name="y")
        T = TaskSpace("T")

        @spawn(T[0], input=[x], inout=[y])
        def first():
            y.array[...] += x.array

        @spawn(T[1], inout=[x])
        def bump():
            x.array[...] += 1
        if RANK == last:
            @spawn(T[2], input=[x], rank=last)
            def extra():
                pass
            T[2].wait()

        @spawn(T[3], inout=[y])
        def again():
            y.array[...] += 1


def mismatch_order():
    """Rank 1 spawns two independent tasks in the other order."""
    with Parla(n_workers=1):
        p = DistArray(np.zeros(2), owner=0, name="p")
        q = DistArray(np.zeros(2), owner=SIZE - 1, name="q")
        T = TaskSpace("T")

        def on_p():
            @spawn(T[0], inout=[p])
            def a():
                p.array[...] += 1

        def on_q():
            @spawn(T[1], inout=[q])
            def b():
                q.array[...] += 1
        for f in ((on_q, on_p) if RANK == 1 else (on_p, on_q)):
            f()


def mismatch_count():
    """The last rank spawns one more task, at the end, that concerns no other rank."""
    with Parla(n_workers=1):
        z = DistArray(np.zeros(2), owner=SIZE - 1, name="z")
        for k in range(5):
            @spawn(inout=[z])
            def step():
                z.array[...] += 1
        if RANK == SIZE - 1:
            @spawn(inout=[z])
            def one_more():
                z.array[...] += 1


def mismatch_array():
    """Rank 1 creates one DistArray more than the others before the shared ones."""
    with Parla(n_workers=1):
        if RANK == 1:
            DistArray(np.zeros(1), owner=1)
        x = DistArray(lambda: np.ones(4), owner=0, shape=(4,), dtype=float, name="x")
        y = DistArray(lambda: np.zeros(4), owner=1, shape=(4,), dtype=float, name="y")

        @spawn(input=[x], inout=[y])
        def add():
            y.array[...] += x.array


def mismatch_contexts():
    """The last rank opens one distributed context fewer than the others and ends its program: the others,
    waiting for it to enter, stop with an error naming it."""
    with Parla(n_workers=1):
        pass
    if RANK == SIZE - 1:
        return
    try:
        with Parla(n_workers=1):
            pass
    except RuntimeError as e:
        emit(f"CAUGHT rank={RANK} RuntimeError {e}")
    else:
        emit(f"CAUGHT rank={RANK} nothing")


def slow_peer():
    """A long task on rank 0 (2.5 s) before the send rank 1 waits for: a stall, not a divergence. With
    PARLA_MPI_STALL_WARN=1 rank 1 says so on stderr, and the program completes."""
    import time
    with Parla(n_workers=1):
        x = DistArray(lambda: np.zeros(3), owner=0, shape=(3,), dtype=float, name="x")
        y = DistArray(lambda: np.zeros(3), owner=1, shape=(3,), dtype=float, name="y")

        @spawn(inout=[x])
        def long():
            time.sleep(2.5)
            x.array[...] += 1

        @spawn(input=[x], inout=[y])
        def use():
            y.array[...] += 2 * x.array
        mpi.fetch(y, rank=0)
    if RANK in (0, 1):
        np.testing.assert_array_equal(y.numpy(), np.full(3, 2.0))
    return {"y": float(y.numpy()[0]) if RANK in (0, 1) else None}


# --- failure ----------------------------------------------------------------------------------------------------

def failure():
    """Task T[13] raises on rank 1; every rank must raise: rank 1 its ValueError, the others RemoteTaskError."""
    T = TaskSpace("T")
    try:
        with Parla(n_workers=1):
            xs = [DistArray(lambda: np.zeros(4), owner=r % SIZE, shape=(4,), dtype=float) for r in range(8)]
            for k in range(60):
                @spawn(T[k], input=[xs[(k + 1) % 8]], inout=[xs[k % 8]])
                def step(k=k):
                    if k == 13:
                        raise ValueError("boom at 13")
                    xs[k % 8].array[...] += xs[(k + 1) % 8].array + 1
    except RemoteTaskError as e:
        emit(f"CAUGHT rank={RANK} RemoteTaskError from={e.rank} {e}")
    except ValueError as e:
        emit(f"CAUGHT rank={RANK} ValueError {e} notes={e.__notes__}")
    else:
        emit(f"CAUGHT rank={RANK} nothing")
    try:   # no distributed context after a failed one
        with Parla(n_workers=1):
            pass
    except RuntimeError as e:
        emit(f"SECOND rank={RANK} RuntimeError {e}")
    else:
        emit(f"SECOND rank={RANK} nothing")


def failure_outside():
    """The program itself raises on the last rank inside the block (not in a task)."""
    try:
        with Parla(n_workers=1):
            xs = [DistArray(lambda: np.zeros(4), owner=r % SIZE, shape=(4,), dtype=float) for r in range(4)]
            if RANK == SIZE - 1:
                raise KeyError("only here")
            for k in range(20):
                @spawn(input=[xs[(k + 1) % 4]], inout=[xs[k % 4]])
                def step(k=k):
                    xs[k % 4].array[...] += 1
    except RemoteTaskError as e:
        emit(f"CAUGHT rank={RANK} RemoteTaskError from={e.rank} {e}")
    except KeyError as e:
        emit(f"CAUGHT rank={RANK} KeyError {e}")


def forever():
    """Runs until interrupted (for the Ctrl-C test): rank 0 prints READY once the tasks run."""
    import time
    with Parla(n_workers=1):
        x = DistArray(lambda: np.zeros(1), owner=0, shape=(1,), dtype=float)
        for k in range(100000):
            @spawn(rank=k % SIZE, inout=[x])
            def tick(k=k):
                if k == 3 and RANK == 3 % SIZE:
                    print("READY", flush=True)
                time.sleep(0.01)


SCENARIOS = {
    "basic": [("basic", basic)],
    "jac": [("jacobi", jacobi)], "rand": [("random", randoms)], "vgpu": [("vgpu", cholesky_virtual_gpus)],
    "suite": [("basic", basic), ("cholesky", cholesky), ("cholesky_equal", cholesky_equal),
              ("cholesky_virtual_gpus", cholesky_virtual_gpus), ("jacobi", jacobi), ("random", randoms),
              ("owns_nothing", owns_nothing), ("nothing_at_all", nothing_at_all), ("remote_deps", remote_deps),
              ("two_contexts", two_contexts), ("nested", nested)],
    "deps": [("remote_deps", remote_deps)], "two": [("two_contexts", two_contexts)], "nested": [("nested", nested)],
    "trace": [("trace", trace)],
    "slow_peer": [("slow_peer", slow_peer)],
}
MISMATCHES = {"mismatch_wait": mismatch_wait, "mismatch_order": mismatch_order, "mismatch_count": mismatch_count,
              "mismatch_array": mismatch_array}

if __name__ == "__main__":
    which = sys.argv[1]
    if which == "failure":
        failure()
    elif which == "failure_outside":
        failure_outside()
    elif which == "mismatch_contexts":
        mismatch_contexts()
    elif which in MISMATCHES:
        mismatch_catch(MISMATCHES[which])
    elif which == "forever":
        forever()
    else:
        for name, fn in SCENARIOS[which]:
            report(name, fn)
