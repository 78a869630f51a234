"""PArray semantics: NumPy's indexing rules, writes through list and mask views, lifetime of unused arrays and
of arrays that leave their task, what a task may use without declaring it, Parla's constructor arguments and
arithmetic (issues 11 and 16)."""
import gc
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from parla import Parla, spawn
from parla.array import PArray, array, asarray
from parla.devices import cpu, gpu

from conftest import clean_env, REPO

MiB = 2**20


# ------------------------------------------------------------------ indexing --

def _random_index(rng, shape):
    """A random index expression for an array of `shape`: integers (negative and out of bounds too), slices
    with steps, int lists (evenly spaced or not, out of bounds sometimes), masks, Ellipsis, newaxis, and
    several lists that broadcast together."""
    def one(n):
        k = rng.random()
        if k < 0.2:
            return rng.randint(-n - 1, n)  # sometimes out of bounds
        if k < 0.45:
            lo, hi = rng.randint(-n - 2, n + 2), rng.randint(-n - 2, n + 2)
            return slice(rng.choice([lo, None]), rng.choice([hi, None]), rng.choice([None, 1, 2, 3, -1, -2]))
        if k < 0.6:
            start, step = rng.randint(0, n), rng.choice([1, 2, 3])
            return list(range(start, min(n + rng.choice([0, 0, 0, 3]), start + 4 * step), step)) or [0]
        if k < 0.75:
            return [rng.randint(-n, n - 1 + rng.choice([0, 0, 0, 2])) for _ in range(rng.randint(1, 4))]
        if k < 0.85:
            return np.array([rng.random() < 0.5 for _ in range(n)])
        return slice(None)

    parts = [one(n) for n in shape[:rng.randint(1, len(shape))]]
    k = rng.random()
    if k < 0.1:
        parts.insert(rng.randint(0, len(parts)), None)
    elif k < 0.2 and len(parts) < len(shape):
        parts.insert(rng.randint(0, len(parts)), Ellipsis)
    if len(parts) == 1 and rng.random() < 0.5:
        return parts[0]
    return tuple(parts)


def _outcome(f):
    try:
        return "ok", f()
    except Exception as e:  # the exception type is part of NumPy's answer
        return type(e), None


def _values(x):
    return np.asarray(x) if isinstance(x, PArray) else x


@pytest.mark.timeout(60)
def test_indexing_follows_numpy_on_random_indices():
    rng = random.Random(1234)
    shapes = [(10,), (6, 5), (4, 3, 5)]
    checked = 0
    for trial in range(1500):
        shape = rng.choice(shapes)
        ref = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
        P = asarray(ref.copy())
        index = _random_index(rng, shape)
        want_kind, want = _outcome(lambda: ref[index])
        got_kind, got = _outcome(lambda: _values(P[index]))
        assert got_kind is want_kind or (got_kind == want_kind), f"index {index!r}: {got_kind} vs NumPy {want_kind}"
        if want_kind == "ok":
            np.testing.assert_array_equal(got, want, err_msg=f"index {index!r}")
            assert np.shape(got) == np.shape(want), f"index {index!r}"
            checked += 1
            # A write through the view lands where NumPy's `ref[index] = value` puts it (duplicates: the last).
            value = -1.0 - np.arange(np.size(want), dtype=np.float64).reshape(np.shape(want))
            target = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
            target[index] = value
            W = asarray(np.arange(np.prod(shape), dtype=np.float64).reshape(shape))
            view = W[index]
            if isinstance(view, PArray):
                view[...] = value
            else:
                W[index] = value
            np.testing.assert_array_equal(W.array, target, err_msg=f"write through index {index!r}")
    assert checked > 600


@pytest.mark.timeout(30)
def test_indexing_regressions():
    A = asarray(np.arange(10.0))
    with pytest.raises(IndexError):
        A[[8, 12]]
    with pytest.raises(IndexError):
        A[10]
    np.testing.assert_array_equal(np.asarray(A[[-1, -3]]), [9.0, 7.0])
    np.testing.assert_array_equal(np.asarray(A[8:2:-3]), [8.0, 5.0])
    M = asarray(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(np.asarray(M[[0, 1], [0, 1]]), [0.0, 5.0])  # two elements, not a block
    np.testing.assert_array_equal(np.asarray(M[[[0], [2]], [1, 3]]), [[1.0, 3.0], [9.0, 11.0]])
    np.testing.assert_array_equal(np.asarray(M[..., 1]), [1.0, 5.0, 9.0])
    assert M[None].shape == (1, 3, 4) and M[:, None, 1].shape == (3, 1)
    T = asarray(np.arange(24.0).reshape(2, 3, 4))
    assert T[0, :, [1, 2]].shape == (2, 3)  # separated advanced indices: their axis comes first, as in NumPy


@pytest.mark.timeout(30)
def test_indexing_inside_a_task_matches_numpy():
    ref = np.arange(40.0).reshape(5, 8)
    with Parla(n_workers=2, virtual_gpus=1):
        M = asarray(ref.copy())

        @spawn(placement=gpu(0), input=[M])
        def t():
            return [np.array(_values(M[i])) for i in ([1, 3], ([0, 4], [7, 1]), (slice(None, None, -2), 5), -1)]
    for got, index in zip(t.result, ([1, 3], ([0, 4], [7, 1]), (slice(None, None, -2), 5), -1)):
        np.testing.assert_array_equal(got, ref[index])


# ---------------------------------------------- writes through list and mask views --

@pytest.mark.timeout(30)
def test_writes_through_list_and_mask_views_outside_tasks():
    A = asarray(np.arange(10.0))
    V = A[[1, 5, 2]]
    V[0] = 100.0
    V += 1
    assert A[1] == 101.0 and A[5] == 6.0 and A[2] == 3.0
    mask = np.arange(10) % 3 == 0
    A[mask] = -1.0
    W = A[mask]
    W *= 2
    np.testing.assert_array_equal(A.array[mask], [-2.0] * 4)
    with pytest.raises(ValueError, match="read-only"):
        V.array[0] = 5.0  # the gathered copy cannot be written: the write would be lost
    A[7] = 70.0
    assert A[[7, 7]].array.tolist() == [70.0, 70.0]  # a list view always reads the latest values


@pytest.mark.timeout(30)
def test_writes_through_list_and_mask_views_inside_tasks():
    with Parla(n_workers=2, virtual_gpus=2):
        A = asarray(np.arange(12.0))
        picked = A[[1, 5, 2]]
        odd = A[np.arange(12) % 2 == 1]

        @spawn(placement=gpu(0), inout=[picked])
        def t1():
            picked[...] = [10.0, 50.0, 20.0]
            with pytest.raises(ValueError, match="read-only"):
                picked.array[0] = 0.0

        @spawn(placement=gpu(1), inout=[odd])
        def t2():
            odd[:] += 1000.0

        @spawn(placement=cpu, inout=[A])
        def t3():
            A[[0, 11]] = -5.0

    want = np.arange(12.0)
    want[[1, 5, 2]] = [10.0, 50.0, 20.0]
    want[1::2] += 1000.0
    want[[0, 11]] = -5.0
    np.testing.assert_array_equal(A.array, want)


# ---------------------------------------------------------- unused arrays are freed --

@pytest.mark.timeout(60)
def test_unused_arrays_free_their_gpu_copies_without_the_cycle_collector():
    gc.collect()
    gc.disable()
    try:
        with Parla(n_workers=2, virtual_gpus=1, gpu_memory=8 * MiB) as p:
            rt = p.runtime
            for _ in range(60):
                A = asarray(np.ones(MiB // 8))
                B = asarray(np.ones(MiB // 8))

                @spawn(placement=gpu(0), inout=[A], input=[B])
                def t():
                    A.array[:] += B.array
                rt.wait_all()
                assert A[0] == 2.0
                del t
            gpu0 = rt.devices()[1]
            # Every pair died before the next was made: no dead array was evicted (or written back first), and
            # at most the pair in use (plus the one being replaced) is resident.
            assert gpu0["evictions"] == 0
            assert gpu0["memory_resident"] <= 4 * MiB
    finally:
        gc.enable()


# --------------------------------------------------------------- Parla's constructors --

@pytest.mark.timeout(30)
def test_asarray_and_array_accept_parlas_arguments():
    A = asarray([1, 2, 3], dtype=np.float32, order="C", name="A", on_gpu=False)
    assert A.dtype == np.float32 and A.name == "A" and A.shape == (3,)
    assert asarray(A) is A and asarray(A, dtype=np.float32) is A
    B = asarray(A, dtype=np.float64)
    assert B is not A and B.dtype == np.float64
    F = asarray(np.asfortranarray(np.arange(6.0).reshape(2, 3)), order="F")
    np.testing.assert_array_equal(F.array, np.arange(6.0).reshape(2, 3))
    L = asarray([1.0, 2.0], like=np.empty(0))
    assert L.array.tolist() == [1.0, 2.0]
    assert asarray(np.zeros(2)).name == "NA"
    C = array([[1, 2]], dtype=np.int32, copy=True, order="K", subok=False, ndmin=3, name="C", on_gpu=True)
    assert C.shape == (1, 1, 2) and C.dtype == np.int32 and C.name == "C"
    base = np.arange(4.0)
    D = array(base, copy=False)
    D[0] = 9.0
    assert base[0] == 9.0
    assert A.storage_size == 12 and A.nbytes == 12


@pytest.mark.timeout(30)
def test_arithmetic_gives_parrays_and_comparisons_give_arrays():
    A = asarray(np.arange(4.0))
    B = asarray(np.ones(4))
    for result, want in ((A + B, np.arange(4.0) + 1), (A * 2, np.arange(4.0) * 2), (2 - A, 2 - np.arange(4.0)),
                         (-A, -np.arange(4.0)), (abs(-A), np.arange(4.0)), (A @ B, 6.0), (A // 2, [0, 0, 1, 1])):
        assert isinstance(result, PArray)
        np.testing.assert_array_equal(result.array, want)
    less = A < 2
    assert type(less) is np.ndarray and less.tolist() == [True, True, False, False]
    q, r = divmod(A, 3)
    assert isinstance(q, PArray) and r.array.tolist() == [0.0, 1.0, 2.0, 0.0]
    assert A.sum() == 6.0 and A.T.shape == (4,) and float(asarray(np.array(2.5))) == 2.5  # attributes forwarded to .array

    with Parla(n_workers=2, virtual_gpus=1):
        @spawn(placement=gpu(0), input=[A, B])
        def t():
            C = A + B  # a PArray made by the task: the task may use it without declaring it
            C += 1
            return C.array.copy()
    np.testing.assert_array_equal(t.result, np.arange(4.0) + 2)


# ------------------------------------------- what a task may use without declaring it --

@pytest.mark.timeout(30)
def test_a_task_writes_a_declared_slice_through_its_base():
    with Parla(n_workers=2, virtual_gpus=1):
        A = asarray(np.zeros((4, 3)))
        for i in range(4):
            @spawn(placement=gpu(0) if i % 2 else cpu, output=[A[i]])
            def fill(i=i):
                A[i] = i + 1.0

        @spawn(placement=gpu(0), inout=[A[0]], dependencies=[fill])
        def bump():
            A[0] += 10.0
            A[0, 2] = -1.0
            with pytest.raises(RuntimeError, match="did not declare"):
                A[1] = 0.0  # not declared by this task
    np.testing.assert_array_equal(A.array, [[11.0, 11.0, -1.0], [2.0] * 3, [3.0] * 3, [4.0] * 3])


@pytest.mark.timeout(30)
def test_undeclared_use_reads_valid_copies_and_refuses_stale_ones():
    with pytest.raises(RuntimeError, match=r"task other_device#\d+ reads PArray 'A'.*stale") as info:
        with Parla(n_workers=2, virtual_gpus=2):
            A = asarray(np.arange(4.0), name="A")
            plain = asarray(np.full(4, 7.0))

            @spawn(placement=cpu)
            def reads_plain():  # never declared by any task: plain memory, as in Parla
                plain.array[0] = 8.0
                return plain.array.sum()

            @spawn(placement=gpu(0), inout=[A])
            def w():
                A.array[:] += 1

            @spawn(placement=gpu(0), dependencies=[w])
            def same_device():  # ordered after the writer, on the device holding the latest copy
                return A.array.tolist()

            @spawn(placement=cpu, dependencies=[w])
            def other_device():  # the CPU copy is stale: an error naming the task and the array
                return A.array.tolist()

            @spawn(placement=gpu(0), dependencies=[same_device])
            def writes():
                # The context raises the first failure; other_device's is the one this test is about, so
                # this one waits for it (a dependency would cancel it instead of letting it fail).
                while other_device.state not in ("done", "failed", "cancelled"):
                    time.sleep(0.001)
                A.array[0] = 0.0
    assert "writes" in str(info.value.__notes__)  # read-only: the write was not declared
    assert reads_plain.result == 29.0
    assert same_device.result == [1.0, 2.0, 3.0, 4.0]
    assert isinstance(writes.exception, ValueError)
    np.testing.assert_array_equal(A.array, [1.0, 2.0, 3.0, 4.0])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_an_undeclared_read_during_a_write_is_refused(device):
    """A task that reads an array it did not declare, while another task writing it runs, would read values
    being written (on a GPU even memory not yet filled): it is refused, naming the task and the array."""
    import threading
    started, release = threading.Event(), threading.Event()
    place = cpu if device == "cpu" else gpu(0)
    with pytest.raises(RuntimeError, match=r"task reader#\d+ reads PArray 'B'.*has not finished") as info:
        with Parla(n_workers=2, virtual_gpus=1):
            B = asarray(np.zeros(4), name="B")

            @spawn(placement=place, inout=[B])
            def writer():
                started.set()
                release.wait(20)
                B.array[:] = 5.0

            @spawn(placement=place)
            def reader():
                started.wait(20)
                try:
                    return float(B[1])
                finally:
                    release.set()
    assert "reader" in str(info.value.__notes__)
    assert writer.state == "done"
    np.testing.assert_array_equal(B.array, [5.0] * 4)


@pytest.mark.timeout(30)
def test_using_the_whole_array_after_declaring_a_view_names_the_view():
    with pytest.raises(RuntimeError, match=r"task whole#\d+ uses PArray 'NA'.*declared only part of that array "
                                           r"\(PArray 'NA' .*a view of shape \(500,\)\).*declared view's \.array"):
        with Parla(n_workers=2):
            A = asarray(np.zeros(1000), name="NA")

            @spawn(inout=[A[0:500]])
            def whole():
                A.array[...] = 1.0
    np.testing.assert_array_equal(A.array, np.zeros(1000))


@pytest.mark.timeout(30)
def test_strict_access_mode_refuses_every_undeclared_use(monkeypatch):
    for make in (lambda: Parla(n_workers=1, strict_access=True),
                 lambda: (monkeypatch.setenv("PARLA_STRICT_ACCESS", "1"), Parla(n_workers=1))[1]):
        with pytest.raises(RuntimeError, match=r"task t#\d+ uses .* did not declare.*strict"):
            with make():
                plain = asarray(np.zeros(2))

                @spawn(placement=cpu)
                def t():
                    mine = asarray(np.ones(2))  # a task's own array is still its own
                    assert mine.array.sum() == 2.0
                    return plain.array
        monkeypatch.delenv("PARLA_STRICT_ACCESS", raising=False)


# --------------------------------------------------------- arrays that leave their task --

ESCAPE = textwrap.dedent("""
    import numpy as np
    from parla import Parla, spawn
    from parla.array import asarray
    from parla.devices import gpu
    N = 1 << 20  # 8 MiB: the allocator gives such blocks back to the system when they are freed
    A = asarray(np.arange(N, dtype=np.float64))
    kept = []
    with Parla(n_workers=2, virtual_gpus=1, gpu_memory=20 * N) as p:
        @spawn(placement=gpu(0), inout=[A])
        def returns():
            A.array[:] += 1
            return A.array  # the GPU copy leaves the task

        @spawn(placement=gpu(0), input=[A], dependencies=[returns])
        def keeps():
            kept.append(A[N // 2:].array)
        p.runtime.wait_all()
        for i in range(3):  # other arrays take the GPU: A's copy is evicted
            B = asarray(np.zeros(N))

            @spawn(placement=gpu(0), inout=[B])
            def fill(B=B, i=i):
                B.array[:] = i
        p.runtime.wait_all()
        assert p.runtime.devices()[1]["evictions"] >= 1
    got = returns.result
    print(got[0], got[-1], kept[0][0], kept[0][-1], float(A.array.sum()) == N * (N + 1) / 2)
""")


@pytest.mark.timeout(60)
def test_an_array_that_leaves_its_task_stays_readable():
    out = subprocess.run([sys.executable, "-c", ESCAPE], capture_output=True, text=True, timeout=50,
                         env=clean_env(), cwd=str(REPO))
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert out.stdout.split() == ["1.0", str(float(1 << 20)), str(float((1 << 19) + 1)), str(float(1 << 20)), "True"]


# ------------------------------------------- Ctrl-C while the main thread waits for a PArray --

INTERRUPTED_READ = textwrap.dedent("""
    import os, signal, threading, time
    import numpy as np
    from parla import Parla, spawn
    from parla.array import asarray
    release = threading.Event()
    A = asarray(np.zeros(4))
    with Parla(n_workers=2):
        @spawn(inout=[A])
        def writer():
            release.wait(60)  # a writer that does not finish until told
            A.array[:] = 1
        for what in ("read", "write"):
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            try:
                if what == "read":
                    A.array
                else:
                    A[0] = 5.0
                print(what, "not interrupted", flush=True)
            except KeyboardInterrupt:
                print(what, "interrupted", writer.state, flush=True)
        release.set()
    print(A.array.tolist(), flush=True)
""")


@pytest.mark.timeout(60)
def test_ctrl_c_interrupts_an_outside_access_waiting_for_a_writer():
    out = subprocess.run([sys.executable, "-c", INTERRUPTED_READ], capture_output=True, text=True, timeout=50,
                         env=clean_env(), cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["read interrupted running", "write interrupted running", "[1.0, 1.0, 1.0, 1.0]"]


# ------------------------------------------------------------------ placement by data --

@pytest.mark.timeout(30)
def test_placement_by_data_runs_where_the_data_is():
    from parla import get_current_devices
    from parla.array import storage_size
    with Parla(n_workers=2, virtual_gpus=2):
        A = asarray(np.zeros(8))
        B = asarray(np.ones(8))

        @spawn(placement=gpu(1), inout=[A])
        def move():
            A.array[:] = 3.0

        @spawn(placement=[A], input=[A], dependencies=[move])
        def follows():  # A's only valid copy is on gpu(1) now
            return get_current_devices(), A.array.sum()

        @spawn(placement=np.zeros(2))
        def on_cpu():
            return get_current_devices()

        @spawn(data=[B], input=[B])
        def by_data():
            return get_current_devices(), B.array.sum()
        with pytest.raises(ValueError, match="data"):
            spawn(data=[B], placement=gpu)(lambda: None)
    assert follows.result == ([gpu(1)], 24.0)
    assert on_cpu.result == [cpu(0)]
    assert by_data.result == ([cpu(0)], 8.0)
    assert storage_size(A, np.zeros(3, dtype=np.int32)) == 64 + 12


# ------------------------------------------------- data for a device of the task, by position --

@pytest.mark.timeout(30)
def test_data_for_the_first_device_by_position_and_a_clear_error_beyond_the_devices():
    from parla import get_current_devices
    with Parla(n_workers=2, virtual_gpus=2):
        A = asarray(np.arange(4.0))
        B = asarray(np.zeros(4))

        @spawn(placement=(gpu(0), gpu(1)), input=[(A, 0)], inout=[(B, 0)])
        def two():
            B.array[:] = A.array * 2
            return get_current_devices()

        @spawn(placement=gpu(1), input=[(A, 0)], dependencies=[two])
        def one():
            return A.array.sum()
        with pytest.raises(ValueError, match=r"task t3#\d+: input=\[\(array, 2\)\].*2 devices"):
            @spawn(placement=(gpu(0), gpu(1)), input=[(A, 2)])
            def t3():
                pass
        with pytest.raises(TypeError, match="position"):
            spawn(input=[(A, "x")])(lambda: None)
    assert two.result == [gpu(0), gpu(1)] and one.result == 6.0
    np.testing.assert_array_equal(B.array, [0.0, 2.0, 4.0, 6.0])


@pytest.mark.timeout(60)
def test_asarray_uses_a_c_contiguous_array_in_place_and_copies_others():
    # As the user guide says: the tasks' writes reach a C-contiguous array given to asarray, and only the
    # PArray for a transpose, a Fortran-ordered array or a strided slice (read those from A.array).
    c = np.zeros(4)
    f = np.asfortranarray(np.zeros((2, 3)))
    t = np.zeros((3, 2)).T
    s = np.zeros(8)[::2]
    with Parla(n_workers=2, virtual_gpus=1):
        arrays = [asarray(a) for a in (c, f, t, s)]
        for k, A in enumerate(arrays):
            @spawn(placement=gpu, inout=[A])
            def write(A=A, k=k):
                A.array[...] = k + 1
    assert c.tolist() == [1.0] * 4
    assert not f.any() and not t.any() and not s.any()
    for k, A in enumerate(arrays):
        assert A.array.flags.c_contiguous and (A.array == k + 1).all()
