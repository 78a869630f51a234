"""Graph capture and replay (parla.capture, parla.Graph): values, ordering, names, and the errors."""
import threading

import numpy as np
import pytest

import parla
from parla import Parla, TaskSpace, capture, get_current_context, get_current_task, spawn
from parla.array import asarray

pytestmark = pytest.mark.timeout(20)


def test_replays_give_the_values_of_spawning_again():
    with Parla(n_workers=2):
        x = asarray(np.zeros(16))
        y = asarray(np.ones(16))
        T = TaskSpace("T")
        with capture("step") as g:
            @spawn(T[0], inout=[x])
            def scale():
                x.array[:] = x.array * 2.0 + 1.0

            @spawn(T[1], input=[x], inout=[y])
            def add():
                y.array[:] += x.array
        assert g.tasks == 2 and g.replays == 0 and g.name == "step"
        joins = [g.replay() for _ in range(20)]   # no wait in between: the data orders the replays
        assert g.replays == 20
        assert [j.name for j in joins[:2]] == ["step#replay1", "step#replay2"]
        g.wait()
        assert all(j.state == "done" for j in joins)
        assert len(T) == 2 and T[0].state == "done"   # the TaskSpace keeps the capture's tasks only
    v, total = 0.0, 1.0
    for _ in range(21):
        v = v * 2.0 + 1.0
        total += v
    assert np.array_equal(x.array, np.full(16, v))
    assert np.array_equal(y.array, np.full(16, total))


def test_replays_and_spawned_tasks_are_ordered_by_their_data():
    """Tasks spawned between replays (writing what the graph only reads, or all of it while slow) and replays
    back to back: the values are those of running everything in issue order."""
    import time
    with Parla(n_workers=2):
        x = asarray(np.arange(8, dtype=float))
        y = asarray(np.zeros(8))
        left, right = x[0:4], x[4:8]
        with capture("mix") as g:
            @spawn(input=[x], inout=[y])
            def mix():
                time.sleep(0.001)             # an unordered writer of x would get in first
                y.array[:] = y.array * 0.5 + x.array

            @spawn(inout=[left])
            def bump():
                left.array[:] += 1.0
        mx, my = np.arange(8, dtype=float), np.zeros(8)
        my = my * 0.5 + mx
        mx[0:4] += 1.0
        for k in range(6):
            if k % 3 == 0:
                @spawn(inout=[x])
                def slow_all():
                    time.sleep(0.002)         # the replay below is issued while this still writes x
                    x.array[:] += 0.25
                mx += 0.25
            for _ in range(2 if k % 3 == 1 else 1):
                g.replay()
                my = my * 0.5 + mx
                mx[0:4] += 1.0

            @spawn(inout=[right])
            def fast_right():                 # writes what the graph only reads, after its read
                right.array[:] += 10.0
            mx[4:8] += 10.0
        g.wait()
    assert np.array_equal(np.asarray(x.array), mx)
    assert np.array_equal(np.asarray(y.array), my)


def test_explicit_dependencies_order_each_replay():
    log = []
    with Parla(n_workers=2):
        T = TaskSpace("T")
        before = TaskSpace("before")

        @spawn(before[0])
        def outside():
            log.append("outside")

        with capture("chain") as g:
            for i in range(4):
                @spawn(T[i], dependencies=[T[i - 1]] if i else [before[0]])
                def step(i=i):
                    log.append(i)
        for _ in range(5):
            g.replay().wait()
    assert log == ["outside"] + [0, 1, 2, 3] * 6


def test_a_replayed_body_sees_its_own_task():
    seen = []
    with Parla(n_workers=2):
        a = asarray(np.zeros(4))
        T = TaskSpace("T")
        with capture("named") as g:
            @spawn(T[0], inout=[a])
            def body():
                task = get_current_task()
                seen.append(task.name)
                a.array[:] += 1
        g.replay()
        g.replay()
        g.wait()
    assert seen == ["T[0]", "T[0] (replay of graph 'named')", "T[0] (replay of graph 'named')"]
    assert np.array_equal(a.array, np.full(4, 3.0))


def test_tasks_spawned_by_bodies_are_spawned_again_not_recorded():
    count = [0]
    lock = threading.Lock()
    with Parla(n_workers=2):
        with capture("parent") as g:
            @spawn()
            def parent():
                @spawn()
                def child():
                    with lock:
                        count[0] += 1
        assert g.tasks == 1
        for _ in range(3):
            g.replay()
        g.wait()
    assert count[0] == 4


def test_await_a_replay_inside_a_task():
    with Parla(n_workers=2):
        a = asarray(np.zeros(8))
        with capture("inner") as g:
            @spawn(inout=[a])
            def inc():
                a.array[:] += 1

        @spawn()
        async def driver():
            for _ in range(4):
                await g.replay()
            return float(a.array[0])

        driver.wait()
        assert driver.result == 5.0


def test_replay_after_update_is_refused_naming_graph_and_task():
    with Parla(n_workers=1):
        a = asarray(np.zeros(4), name="a")
        with capture("resized") as g:
            @spawn(TaskSpace("W")[0], inout=[a])
            def work():
                a.array[:] += 1
        g.replay()
        g.wait()
        a.update(np.zeros(8))
        with pytest.raises(RuntimeError, match=r"graph 'resized'.*W\[0\].*update\(\)"):
            g.replay()
    assert a.shape == (8,)


def test_an_update_is_detected_after_replays_that_skipped_the_check():
    # Replays skip the loop over the graph's arrays while no PArray was updated (parla.array._updates); an
    # update of an array outside the graph moves that count, the next replay checks and passes, and a later
    # update of the base of a view the graph declares is still refused.
    with Parla(n_workers=1):
        a = asarray(np.zeros(6), name="a")
        other = asarray(np.zeros(2), name="other")
        with capture("viewed") as g:
            @spawn(TaskSpace("V")[0], inout=[a[2:4]])
            def work():
                a[2:4].array[:] += 1
        for _ in range(3):
            g.replay()
        other.update(np.ones(3))
        g.replay()
        g.replay()
        g.wait()
        assert np.array_equal(a.array, [0, 0, 6, 6, 0, 0])
        a.update(np.zeros(6))   # the same shape, but a different array
        with pytest.raises(RuntimeError, match=r"graph 'viewed'.*PArray 'a'.*V\[0\].*update\(\)"):
            g.replay()
        with pytest.raises(RuntimeError, match=r"graph 'viewed'.*V\[0\].*update\(\)"):
            g.replay()   # refused again: a failed check does not mark the arrays as seen
        assert g.replays == 5
    assert np.array_equal(other.array, np.ones(3))


def test_a_failed_replay_fails_the_graph():
    calls = [0]
    with pytest.raises(ValueError, match="third call"):
        with Parla(n_workers=1):
            with capture("flaky") as g:
                @spawn(TaskSpace("F")[0])
                def step():
                    calls[0] += 1
                    if calls[0] == 3:
                        raise ValueError("third call")
            g.replay().wait()
            g.replay().wait()   # the body's third call raises
            with pytest.raises(RuntimeError, match=r"graph 'flaky'.*F\[0\].*ValueError: third call"):
                g.wait()
            with pytest.raises(RuntimeError, match=r"graph 'flaky'.*F\[0\]"):
                g.replay()
            assert g.replays == 2
    assert calls[0] == 3


def test_misuse_is_refused():
    with Parla(n_workers=1) as ctx:
        with capture("outer") as g:
            with pytest.raises(RuntimeError, match="being captured"):
                g.replay()
            with pytest.raises(RuntimeError, match="captures do not nest"):
                with capture("inner"):
                    pass
        with pytest.raises(RuntimeError, match="captured once"):
            with g:
                pass
        with pytest.raises(RuntimeError, match="async"):
            with capture("async"):
                @spawn()
                async def coroutine():
                    return 1
        with pytest.raises(KeyError):
            with capture("raised") as broken:
                raise KeyError("in the block")
        with pytest.raises(RuntimeError, match="capture failed"):
            broken.replay()
    assert ctx.failed == []
    with pytest.raises(RuntimeError, match="exited"):
        g.replay()
    with pytest.raises(RuntimeError, match="no Parla runtime"):
        capture("outside")


def test_only_the_capturing_thread_is_recorded():
    with Parla(n_workers=2):
        done = threading.Event()
        ran = []

        def other():
            @spawn()
            def elsewhere():
                ran.append("other")
            done.set()

        with capture("mine") as g:
            thread = threading.Thread(target=other)
            thread.start()
            thread.join(10)

            @spawn()
            def mine():
                ran.append("mine")
        assert done.is_set() and g.tasks == 1
        g.replay().wait()
    assert sorted(ran) == ["mine", "mine", "other"]


def test_data_for_the_kth_device_is_replayed_there():
    from parla.devices import gpu
    with Parla(n_workers=2, virtual_gpus=2):
        A = asarray(np.zeros(8))
        seen = []
        with capture("pair") as g:
            @spawn(placement=[(gpu(1), gpu(0))], inout=[(A, 1)])
            def two():
                seen.append(A.exists_on_device(gpu(0)) and not A.exists_on_device(gpu(1)))
                with get_current_context()[1]:
                    A.array[:] += 1
        for _ in range(3):
            g.replay()
        g.wait()
        assert seen == [True] * 4
        np.testing.assert_array_equal(A.array, np.full(8, 4.0))


@pytest.mark.timeout(60)
def test_native_bodies_replay_without_the_gil():
    """A replayed graph of native bodies (a GEMM, then sem_post) runs while the main thread holds the GIL
    (waiting on the semaphore through ctypes.PyDLL); the GEMM's values are those of every replay."""
    import ctypes
    import time
    from parla import kernels, native

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    libc = ctypes.CDLL(None)
    sem = ctypes.create_string_buffer(64)
    assert libc.sem_init(sem, 0, 0) == 0
    sem_post = libc.sem_post
    sem_post.restype, sem_post.argtypes = ctypes.c_int, [ctypes.c_void_p]
    holding = ctypes.PyDLL(None).sem_timedwait  # the GIL stays held during the call
    holding.argtypes = [ctypes.c_void_p, ctypes.POINTER(Timespec)]
    holding.restype = ctypes.c_int
    rng = np.random.default_rng(5)
    a, b, c = rng.standard_normal((16, 8)), rng.standard_normal((12, 8)), rng.standard_normal((16, 12))
    A, B, C = asarray(a.copy()), asarray(b.copy()), asarray(c.copy())
    with Parla(n_workers=2):
        T = TaskSpace("T")
        with capture("native") as g:
            spawn(T[0], input=[A, B], inout=[C])(kernels.gemm(A, B, C))
            spawn(T[1], dependencies=[T[0]])(native.call(sem_post, ctypes.addressof(sem)))
        T[1].wait(10)
        assert libc.sem_wait(sem) == 0   # the captured run's post
        for _ in range(3):
            g.replay()
        for _ in range(3):
            deadline = time.time() + 10
            ts = Timespec(int(deadline), int((deadline % 1) * 1e9))
            assert holding(ctypes.addressof(sem), ctypes.byref(ts)) == 0, "a replayed native body needed the GIL"
        g.wait()
    libc.sem_destroy(sem)
    np.testing.assert_allclose(C.array, c - 4 * a @ b.T, rtol=1e-12, atol=1e-12)


@pytest.mark.timeout(30)
def test_an_empty_graph_replays_to_a_parla_task():
    with Parla(n_workers=2):
        with capture("empty") as g:
            pass
        join = g.replay()
        assert isinstance(join, parla.Task)
        g.wait(timeout=10)
        assert join.state == "done"
        assert g.replays == 1


@pytest.mark.timeout(30)
def test_a_dependency_on_a_task_spawned_later_in_the_capture_is_replayed_as_one():
    # T[0] names T[1] before T[1] is spawned (both in the capture): each replay's T[0] runs after that
    # replay's T[1]; it depended on the captured T[1], done already, so replays ran a before b.
    import time
    order = []
    with Parla(n_workers=2):
        T = TaskSpace("T")
        with capture("forward") as g:
            @spawn(T[0], [T[1]])
            def a():
                order.append("a")

            @spawn(T[1])
            def b():
                time.sleep(0.05)
                order.append("b")
        g.wait()
        T[0].wait()
        for _ in range(3):
            g.replay()
            g.wait(timeout=10)
    assert order == ["b", "a"] * 4
