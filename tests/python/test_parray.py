"""PArray: coherence across virtual GPUs, hazards, subarrays, API (issue 5).

Each test builds its own ``Parla(virtual_gpus=N)``; PARLA_VIRTUAL_GPUS is deleted so the shell cannot change
the device count.
"""
import io
import random
import threading
import time
from contextlib import redirect_stdout

import numpy as np
import pytest

from parla import Parla, TaskSpace, get_current_devices, spawn
from parla import array as parray_mod
from parla.array import PArray, asarray, asarray_batch, clone_here, copy
from parla.devices import cpu, gpu



# ------------------------------------------------------------ tutorial programs --

@pytest.mark.timeout(30)
def test_inout_chain_across_devices():
    with Parla(virtual_gpus=2) as p:
        A = asarray(np.arange(16, dtype=np.float64))
        T = TaskSpace("T")
        seen = {}
        for i, place in enumerate([gpu(0), gpu(1), cpu, gpu(0), cpu, gpu(1)]):
            @spawn(T[i], placement=place, inout=[A])
            def step():
                seen[i] = (get_current_devices()[0], A.array.copy())
                A.array[:] = A.array * 2 + i
        p.runtime.wait_all()
        expect = np.arange(16, dtype=np.float64)
        for i, place in enumerate([gpu(0), gpu(1), cpu(0), gpu(0), cpu(0), gpu(1)]):
            dev, before = seen[i]
            assert dev == place
            np.testing.assert_array_equal(before, expect)
            expect = expect * 2 + i
        np.testing.assert_array_equal(A.array, expect)
        # the last writer's device holds the only valid copy... until the read above fetched it to the CPU
        assert A.exists_on_device(cpu(0))
    np.testing.assert_array_equal(A.array, expect)


@pytest.mark.timeout(30)
def test_subarray_writes_on_two_devices_then_whole_read():
    with Parla(n_workers=4, virtual_gpus=2):
        A = asarray(np.zeros(20, dtype=np.int64))
        started = threading.Barrier(2, timeout=5)

        L, R = A[0:10], A[10:20]

        @spawn(placement=gpu(0), inout=[L])
        def left():
            started.wait()  # both halves run at once: disjoint views do not order each other
            L.array[:] += np.arange(10)

        @spawn(placement=gpu(1), output=[R])
        def right():
            started.wait()
            R.array[:] = 100

        @spawn(placement=cpu, input=[A])
        def whole():
            return A.array.copy()

        @spawn(placement=gpu(1), input=[A])
        def whole_gpu():
            return A.array.copy()
    expect = np.concatenate([np.arange(10), np.full(10, 100)])
    np.testing.assert_array_equal(whole.result, expect)
    np.testing.assert_array_equal(whole_gpu.result, expect)
    np.testing.assert_array_equal(A.array, expect)


@pytest.mark.timeout(30)
def test_reslicing_a_declared_view_inside_the_task():
    """Parla programs write ``inout=[A[0:10]]`` and use ``A[0:10].array`` in the body: the same slice taken
    again is the declared subarray (the view object is new, the subarray is the same)."""
    with Parla(virtual_gpus=2):
        A = asarray(np.zeros(20, dtype=np.int64))

        @spawn(placement=gpu(0), inout=[A[0:10]])
        def left():
            A[0:10].array[:] += 1

        @spawn(placement=gpu(1), input=[A[10:20]])
        def right():
            return A[10:20].array.sum()
    np.testing.assert_array_equal(A.array, [1] * 10 + [0] * 10)


@pytest.mark.timeout(30)
def test_2d_block_writes_then_whole_read():
    with Parla(n_workers=4, virtual_gpus=4):
        M = asarray(np.zeros((8, 8)))
        for bi in range(2):
            for bj in range(2):
                blk = M[bi * 4:(bi + 1) * 4, bj * 4:(bj + 1) * 4]

                @spawn(placement=gpu(2 * bi + bj), output=[blk])
                def w(blk=blk, v=10 * bi + bj):
                    blk.array[:] = v

        @spawn(placement=gpu(0), input=[M])
        def r():
            return M.array.copy()
    expect = np.zeros((8, 8))
    expect[:4, :4], expect[:4, 4:], expect[4:, :4], expect[4:, 4:] = 0, 1, 10, 11
    np.testing.assert_array_equal(r.result, expect)
    np.testing.assert_array_equal(M.array, expect)


@pytest.mark.timeout(30)
def test_update_changing_shape_then_use_in_task():
    with Parla(virtual_gpus=2) as p:
        A = asarray(np.arange(4.0))
        @spawn(placement=gpu(0), inout=[A])
        def first():
            A.array[:] += 1
        A.update(np.ones((3, 5), dtype=np.int32))  # waits for first
        assert first.state == "done"
        assert A.shape == (3, 5) and A.dtype == np.int32
        @spawn(placement=gpu(1), inout=[A])
        def second():
            A.array[:] *= 7
            return A.array.shape, A.array.dtype
        row = A[1]

        @spawn(placement=gpu(0), input=[row])
        def third():
            return row.array.copy()
        p.runtime.wait_all()
        assert second.result == ((3, 5), np.int32)
        np.testing.assert_array_equal(third.result, np.full(5, 7, dtype=np.int32))
        np.testing.assert_array_equal(A.array, np.full((3, 5), 7, dtype=np.int32))
        # update inside a task keeps the shape
        @spawn(placement=gpu(1), inout=[A])
        def inside():
            A.update(np.zeros((3, 5), dtype=np.int32))
    np.testing.assert_array_equal(A.array, np.zeros((3, 5), dtype=np.int32))


# ------------------------------------------------------------------ hazards --

def _timed_program(kinds, meet=()):
    """Spawns one task per (placement, mode) on the same PArray without dependencies; returns the log of
    (event, index) and the tasks. The tasks whose indices are in meet wait for one another (a barrier) once
    started: they must be able to run at the same time, and a test of that does not depend on timing."""
    log = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(meet), timeout=20) if meet else None
    with Parla(n_workers=4, virtual_gpus=4):
        A = asarray(np.zeros(8))
        tasks = []
        for i, (place, mode) in enumerate(kinds):
            @spawn(placement=place, **{mode: [A]})
            def t():
                with lock:
                    log.append(("start", i))
                if mode != "input":
                    A.array[:] = A.array + 1 if mode == "inout" else i
                else:
                    value = A.array.copy()
                if i in meet:
                    barrier.wait()
                time.sleep(0.02)
                with lock:
                    log.append(("end", i))
                return None if mode != "input" else value
            tasks.append(t)
    return log, tasks


def _ends_before_starts(log, a, b):
    return log.index(("end", a)) < log.index(("start", b))


@pytest.mark.timeout(30)
def test_raw_hazard_orders_without_dependencies():
    log, tasks = _timed_program([(gpu(0), "output"), (gpu(1), "input"), (cpu, "input"), (gpu(2), "input")],
                                meet=(1, 2, 3))
    for r in (1, 2, 3):
        assert _ends_before_starts(log, 0, r), log
        np.testing.assert_array_equal(tasks[r].result, np.zeros(8))
    # readers of the same version run concurrently
    starts = [log.index(("start", r)) for r in (1, 2, 3)]
    ends = [log.index(("end", r)) for r in (1, 2, 3)]
    assert min(ends) > min(starts) and sorted(starts)[1] < min(ends), log


@pytest.mark.timeout(30)
def test_war_hazard_orders_without_dependencies():
    log, tasks = _timed_program([(gpu(0), "input"), (gpu(1), "input"), (gpu(2), "output")])
    assert _ends_before_starts(log, 0, 2) and _ends_before_starts(log, 1, 2), log
    np.testing.assert_array_equal(tasks[0].result, np.zeros(8))
    np.testing.assert_array_equal(tasks[1].result, np.zeros(8))


@pytest.mark.timeout(30)
def test_waw_and_inout_chain_without_dependencies():
    log, tasks = _timed_program([(gpu(0), "output"), (gpu(1), "output"), (cpu, "inout"), (gpu(3), "inout"),
                                 (gpu(2), "input")])
    for a, b in [(0, 1), (1, 2), (2, 3), (3, 4)]:
        assert _ends_before_starts(log, a, b), log
    np.testing.assert_array_equal(tasks[4].result, np.full(8, 3.0))


@pytest.mark.timeout(30)
def test_overlapping_slices_are_ordered_disjoint_are_not():
    log = []
    lock = threading.Lock()
    with Parla(n_workers=4, virtual_gpus=2):
        A = asarray(np.zeros(10))

        def body(i, view, v):
            def run():
                with lock:
                    log.append(("start", i))
                view.array[:] = v
                time.sleep(0.05)
                with lock:
                    log.append(("end", i))
            return run
        for i, (place, view) in enumerate([(gpu(0), A[0:6]), (gpu(1), A[4:10]),  # overlaps the first
                                           (cpu, A[::2][3:])]):                # 6, 8: overlaps the second only
            spawn(placement=place, output=[view])(body(i, view, i + 1))
    assert _ends_before_starts(log, 0, 1)
    assert _ends_before_starts(log, 1, 2)
    np.testing.assert_array_equal(A.array, [1, 1, 1, 1, 2, 2, 3, 2, 3, 2])


@pytest.mark.timeout(30)
def test_explicit_dependency_on_later_spawned_task_wins():
    order = []
    with Parla(virtual_gpus=2):
        A = asarray(np.zeros(4))
        T = TaskSpace("T")

        @spawn(T[0], dependencies=[T[1]], placement=gpu(0), inout=[A])
        def a():
            order.append(("A", A.array.copy()))
            A.array[:] = A.array * 10

        @spawn(T[1], placement=gpu(1), inout=[A])
        def b():
            order.append(("T1", A.array.copy()))
            A.array[:] += 1

        @spawn(T[2], placement=cpu, input=[A])
        def c():
            order.append(("T2", A.array.copy()))
    assert [name for name, _ in order] == ["T1", "A", "T2"]
    np.testing.assert_array_equal(order[1][1], np.ones(4))
    np.testing.assert_array_equal(A.array, np.full(4, 10.0))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("place", [cpu, gpu(0)])
def test_read_and_output_of_overlapping_views_in_one_task(place):
    """A task that reads A (inout or input) and also overwrites a part of it (output=[A[0:4]]) must see A's
    values: a declared read needs the data copied in, whatever other accesses say."""
    with Parla(virtual_gpus=1):
        A = asarray(np.arange(8.0))
        V = A[0:4]

        @spawn(placement=place, inout=[A], output=[V])
        def t():
            before = A.array.copy()
            V.array[:] = -1
            return before
    np.testing.assert_array_equal(t.result, np.arange(8.0))
    np.testing.assert_array_equal(A.array, [-1, -1, -1, -1, 4, 5, 6, 7])


# ------------------------------------------------------------------ bad input --

@pytest.mark.timeout(30)
def test_write_to_input_only_parray_raises():
    with pytest.raises(ValueError, match="read-only") as info:
        with Parla(virtual_gpus=1):
            A = asarray(np.zeros(4))
            @spawn(placement=gpu(0), input=[A])
            def bad():
                A.array[0] = 1
    assert any("bad#" in note for note in getattr(info.value, "__notes__", []))
    with pytest.raises(ValueError, match="read-only"):
        with Parla(virtual_gpus=1):
            A = asarray(np.zeros(4))
            V = A[1:3]

            @spawn(placement=cpu, input=[V])
            def bad_view():
                V.array[:] = 1
    np.testing.assert_array_equal(A.array, np.zeros(4))


@pytest.mark.timeout(30)
def test_non_parray_in_access_lists_raises_at_spawn():
    with Parla(virtual_gpus=1):
        for kw in ("input", "output", "inout"):
            with pytest.raises(TypeError, match=rf"task t#\d+: {kw}="):
                @spawn(placement=gpu, **{kw: [np.zeros(3)]})
                def t():
                    pass
        with pytest.raises(TypeError):
            @spawn(placement=gpu, input=[asarray(np.zeros(2)), [1, 2]])
            def t2():
                pass


@pytest.mark.timeout(30)
def test_parray_from_other_runtime_raises():
    A = asarray(np.zeros(4))
    with Parla(virtual_gpus=1):
        @spawn(placement=gpu, inout=[A])
        def t():
            A.array[:] += 1
    with Parla(virtual_gpus=1):
        # A rebinds to the new runtime: using it again is fine
        @spawn(placement=gpu, inout=[A])
        def t2():
            A.array[:] += 1
    np.testing.assert_array_equal(A.array, np.full(4, 2.0))


@pytest.mark.timeout(30)
def test_undeclared_parray_raises():
    with pytest.raises(RuntimeError, match=r"task sneaky#\d+.*did not declare"):
        with Parla(virtual_gpus=1):
            A = asarray(np.zeros(4))
            B = asarray(np.zeros(4))
            @spawn(placement=gpu(0), input=[A])
            def sneaky():
                return B.array.sum()


@pytest.mark.timeout(30)
def test_output_never_written_is_fine():
    with Parla(virtual_gpus=1):
        A = asarray(np.arange(4.0))
        @spawn(placement=cpu, output=[A])
        def lazy():
            pass
    assert lazy.state == "done"


# ----------------------------------------------------------------- PArray API --

@pytest.mark.timeout(30)
def test_parray_api_outside_tasks():
    base = np.arange(12, dtype=np.float64)
    A = asarray(base)
    assert isinstance(A, PArray) and asarray(A) is A
    assert len(A) == 12 and A.shape == (12,) and A.ndim == 1 and A.size == 12 and A.nbytes == 96
    assert list(A) == list(base)
    assert A[3] == 3.0
    assert isinstance(A[2:8:2], PArray)
    np.testing.assert_array_equal(np.asarray(A[2:8:2]), [2, 4, 6])
    np.testing.assert_array_equal(A + 1, base + 1)
    np.testing.assert_array_equal(1 + A, base + 1)
    np.testing.assert_array_equal(A * A, base * base)
    np.testing.assert_array_equal(A - 1, base - 1)
    np.testing.assert_array_equal(10 - A, 10 - base)
    np.testing.assert_array_equal(A > 5, base > 5)
    np.testing.assert_array_equal(A == 5, base == 5)
    np.testing.assert_array_equal(-A, -base)
    A += 1
    A *= 2
    np.testing.assert_array_equal(A.array, (np.arange(12.0) + 1) * 2)
    A[0] = -5
    A[1:3] = [7, 8]
    assert A[0] == -5 and list(A[1:3]) == [7, 8]
    out = io.StringIO()
    with redirect_stdout(out):
        print(A)
        A.print_overview()
    assert "-5." in out.getvalue() and "cpu(0)" in out.getvalue()
    assert "PArray(" in repr(A)
    M = parray_mod.array(np.arange(12).reshape(3, 4))
    assert M.shape == (3, 4) and len(M) == 3
    np.testing.assert_array_equal(np.asarray(M[1:, ::2]), [[4, 6], [8, 10]])
    np.testing.assert_array_equal(M @ np.ones(4, dtype=np.int64), [6, 22, 38])
    rows = [np.asarray(r) if isinstance(r, PArray) else r for r in M]
    np.testing.assert_array_equal(rows[2], [8, 9, 10, 11])
    C = parray_mod.array(base)
    first = C[0]
    base[0] = 99
    assert C[0] == first != 99  # array() copies


@pytest.mark.timeout(30)
def test_asarray_batch_and_legacy_module_names():
    import parla.parray as legacy
    for name in ("PArray", "array", "asarray", "asarray_batch", "clone_here", "copy", "get_array_module"):
        assert getattr(legacy, name) is getattr(parray_mod, name)
    a, b = np.zeros(2), np.ones(3)
    out = asarray_batch([a, (b, {"k": a})])
    assert isinstance(out, list) and isinstance(out[1], tuple) and isinstance(out[1][1], dict)
    assert all(isinstance(x, PArray) for x in (out[0], out[1][0], out[1][1]["k"]))
    x, y = asarray_batch(a, b)
    assert isinstance(x, PArray) and isinstance(y, PArray) and y.shape == (3,)
    assert parray_mod.get_array_module(x) is np and parray_mod.get_array_module(np.zeros(1)) is np


@pytest.mark.timeout(30)
def test_residency_api_and_evict():
    with Parla(virtual_gpus=2) as p:
        A = asarray(np.arange(1024, dtype=np.float64))
        assert A.exists_on_device(cpu(0)) and not A.exists_on_device(gpu(0))
        assert A.nbytes_at(gpu(0)) == 0
        @spawn(placement=gpu(0), inout=[A])
        def t():
            A.array[:] += 1
        p.runtime.wait_all()
        assert A.exists_on_device(gpu(0)) and not A.exists_on_device(cpu(0))
        assert A.nbytes_at(gpu(0)) == 8192 and A.nbytes_at(gpu(1)) == 0
        out = io.StringIO()
        with redirect_stdout(out):
            A.print_overview()
        assert "gpu(0)" in out.getvalue() and "8192" in out.getvalue()
        A.evict(gpu(0))  # last valid copy: written back first
        assert not A.exists_on_device(gpu(0)) and A.nbytes_at(gpu(0)) == 0
        assert A.exists_on_device(cpu(0))
        np.testing.assert_array_equal(A.array, np.arange(1024) + 1.0)
        @spawn(placement=gpu(1), input=[A])
        def r():
            pass
        p.runtime.wait_all()
        assert A.exists_on_device(gpu(1)) and A.exists_on_device(cpu(0))
        A.evict()
        assert not A.exists_on_device(gpu(1))
        assert A[2:4].exists_on_device(cpu(0))
        np.testing.assert_array_equal(A.array, np.arange(1024) + 1.0)


@pytest.mark.timeout(30)
def test_clone_here_and_copy():
    with Parla(virtual_gpus=2):
        A = asarray(np.arange(6.0))
        B = asarray(np.zeros(6))
        @spawn(placement=gpu(1), input=[A], output=[B])
        def t():
            c = clone_here(A)
            c += 1
            copy(B, c)
            return type(c), c.copy(), A.array.copy()
    kind, c, a = t.result
    assert kind is np.ndarray
    np.testing.assert_array_equal(c, np.arange(6.0) + 1)
    np.testing.assert_array_equal(a, np.arange(6.0))
    np.testing.assert_array_equal(B.array, np.arange(6.0) + 1)
    dst = np.zeros(6)
    copy(dst, A)
    np.testing.assert_array_equal(dst, np.arange(6.0))
    assert clone_here(A) is not A.array


@pytest.mark.timeout(30)
def test_outside_task_reads_see_latest_values():
    with Parla(virtual_gpus=4):
        A = asarray(np.zeros(1000, dtype=np.int64))
        for i in range(20):
            @spawn(placement=gpu(i % 4), inout=[A])
            def inc():
                time.sleep(0.001)
                A.array[:] += 1
        assert A[5] == 20  # waits for the writers
        np.testing.assert_array_equal(A.array, np.full(1000, 20))
        A[0:10] = 5  # outside write: later tasks see it
        @spawn(placement=gpu(3), input=[A])
        def r():
            return A.array[:12].copy()
        A += 1  # waits for the reader first
    np.testing.assert_array_equal(r.result, [5] * 10 + [20, 20])
    np.testing.assert_array_equal(A.array, np.array([6] * 10 + [21] * 990))


# ---------------------------------------------------- randomized differential --

SHAPES = [(24,), (6, 8), (5, 4, 3)]
PLACEMENTS = [cpu, gpu(0), gpu(1), gpu(2), gpu(3), gpu, [cpu, gpu(1)], [gpu(2), gpu(3)]]


def _random_slice(rng, n):
    kind = rng.random()
    if kind < 0.15:
        return slice(None)
    if kind < 0.25:
        i = rng.randrange(n)
        return slice(i, i + 1)
    a, b = sorted(rng.sample(range(n + 1), 2))
    step = rng.choice([1, 1, 1, 2, 3])
    if rng.random() < 0.15 and b - a >= 2:  # reversed slice
        return slice(b - 1, a - 1 if a > 0 else None, -step)
    return slice(a, b, step)


def _random_index(rng, shape):
    if len(shape) == 1 or rng.random() < 0.3:
        return _random_slice(rng, shape[0])
    k = rng.randrange(1, len(shape) + 1)
    idx = tuple(_random_slice(rng, shape[d]) for d in range(k))
    if rng.random() < 0.2:  # an integer on the first axis (drops a dimension)
        idx = (rng.randrange(shape[0]),) + idx[1:]
    return idx


def _make_program(seed):
    rng = random.Random(seed)
    n_arrays = rng.randint(1, 3)
    shapes = [rng.choice(SHAPES) for _ in range(n_arrays)]
    init = [np.random.default_rng(seed + i).integers(0, 100, size=s) for i, s in enumerate(shapes)]
    tasks = []
    for t in range(rng.randint(3, 12)):
        accesses = []
        for a in rng.sample(range(n_arrays), rng.randint(1, n_arrays)):
            idx = None if rng.random() < 0.2 else _random_index(rng, shapes[a])
            accesses.append((a, idx, rng.choice(["input", "input", "output", "inout", "inout"])))
        deps = rng.sample(range(t), rng.randint(0, min(t, 2))) if t and rng.random() < 0.4 else []
        tasks.append((rng.choice(PLACEMENTS), accesses, deps, rng.randint(1, 50)))
    return init, tasks


def _apply(view, mode, k):
    """What a task does to one declared view; returns what it read (None for output)."""
    if mode == "input":
        return np.array(view, copy=True)
    if mode == "output":
        view[...] = k
        return None
    before = np.array(view, copy=True)
    view[...] = (view * 7 + k) % 65521
    return before


def _reference(init, tasks):
    arrays = [a.copy() for a in init]
    reads = []
    for _, accesses, _, k in tasks:
        got = []
        for a, idx, mode in accesses:
            view = arrays[a] if idx is None else arrays[a][idx]
            got.append(_apply(view, mode, k))
        reads.append(got)
    return arrays, reads


def _spawn_program(init, tasks):
    parrays = [asarray(a.copy()) for a in init]
    reads = [None] * len(tasks)
    handles = []
    for t, (place, accesses, deps, k) in enumerate(tasks):
        views = [parrays[a] if idx is None else parrays[a][idx] for a, idx, _ in accesses]
        kw = {"input": [], "output": [], "inout": []}
        for v, (_, _, mode) in zip(views, accesses):
            kw[mode].append(v)

        def body(t=t, views=views, accesses=accesses, k=k):
            reads[t] = [_apply(v.array, mode, k) for v, (_, _, mode) in zip(views, accesses)]
        handles.append(spawn(placement=place, dependencies=[handles[d] for d in deps], **kw)(body))
    return parrays, reads


def _check(seed, init, tasks, parrays, reads):
    want_arrays, want_reads = _reference(init, tasks)
    for t, (want, got) in enumerate(zip(want_reads, reads)):
        assert got is not None, f"seed {seed}: task {t} did not run"
        for w, g in zip(want, got):
            if w is None:
                assert g is None
            else:
                np.testing.assert_array_equal(g, w, err_msg=f"seed {seed}: read of task {t}: {tasks[t]}")
    for i, (w, p) in enumerate(zip(want_arrays, parrays)):
        np.testing.assert_array_equal(p.array, w, err_msg=f"seed {seed}: final array {i}; program {tasks}")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("chunk", range(8))
def test_random_programs_match_numpy(chunk):
    """1,000 random programs in total (8 chunks of 125), each compared with a sequential NumPy run.
    Programs of one chunk share a runtime (they use distinct PArrays, so they run interleaved)."""
    per_chunk = 125
    seeds = range(chunk * per_chunk, (chunk + 1) * per_chunk)
    programs = [(s,) + _make_program(s) for s in seeds]
    results = []
    with Parla(n_workers=3, virtual_gpus=4):
        for seed, init, tasks in programs:
            parrays, reads = _spawn_program(init, tasks)
            results.append((seed, init, tasks, parrays, reads))
            if seed % 5 == 0:  # outside-task read inside the context: the latest values
                want_arrays, _ = _reference(init, tasks)
                for w, p in zip(want_arrays, parrays):
                    np.testing.assert_array_equal(p.array, w, err_msg=f"seed {seed} (read inside context)")
    for seed, init, tasks, parrays, reads in results:
        _check(seed, init, tasks, parrays, reads)


@pytest.mark.timeout(30)
def test_empty_parray_and_empty_view_on_gpus():
    """An array or view of no elements has no allocation on a GPU; its .array there used to raise "has no copy
    on gpu(k)" and fail the task. It is an empty array of the right shape, read-only when only read."""
    T = TaskSpace("T")
    with Parla(virtual_gpus=2):
        E = asarray(np.zeros((0, 3)))
        M = asarray(np.arange(12.0).reshape(4, 3))
        V = M[2:2]

        @spawn(T[0], placement=gpu(1), inout=[E])
        def write_empty():
            E.array[:] += 1
            return E.array.shape

        @spawn(T[1], placement=gpu(0), input=[E])
        def read_empty():
            return E.array.shape, E.array.flags.writeable

        @spawn(T[2], placement=gpu(0), inout=[V])
        def write_empty_view():
            V.array[:] += 1
            return V.array.shape

        @spawn(T[3], placement=gpu(1), inout=[M[1:3]])
        def write_rows():
            M[1:3].array[:] *= 2
            return M[1:3].array.shape
    assert [T[k].result for k in range(4)] == [(0, 3), ((0, 3), False), (0, 3), (2, 3)]
    expected = np.arange(12.0).reshape(4, 3)
    expected[1:3] *= 2
    assert E.array.shape == (0, 3) and np.array_equal(M.array, expected)


@pytest.mark.timeout(30)
def test_device_arguments_of_evict_exists_nbytes_are_checked():
    """A.evict("gpu"), A.evict(gpu) and A.evict(gpu(5)) did nothing, silently, on an array no task had used yet;
    A.nbytes_at("x") raised "invalid literal for int()". Every form now gets a TypeError or ValueError naming
    the method; a device or an engine number works as before."""
    with Parla(virtual_gpus=2):
        A = asarray(np.arange(6.0))
        for method in ("evict", "exists_on_device", "nbytes_at"):
            for bad in ("gpu", gpu, 1.0, True):
                with pytest.raises(TypeError, match=rf"PArray\.{method}\(device="):
                    getattr(A, method)(bad)
            for bad in (3, -5, np.int64(99)):
                with pytest.raises(ValueError, match=rf"PArray\.{method}\(device=-?\d+\): no such device"):
                    getattr(A, method)(bad)
            with pytest.raises(ValueError, match=r"no such device gpu\(5\)"):
                getattr(A, method)(gpu(5))

        @spawn(placement=gpu(1), inout=[A])
        def body():
            A.array[:] += 1
        body.wait()
        assert A.exists_on_device(gpu(1)) and A.exists_on_device(np.int64(2)) and A.nbytes_at(2) == 48
        A.evict(2)
        assert not A.exists_on_device(gpu(1)) and A.exists_on_device(0)
    assert A.array.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
