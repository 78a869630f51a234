"""Bodies that release the GIL run in parallel on the worker threads.

Every check here is behavioural: bodies meet at a barrier (which only completes when that many bodies are in
flight at once) or count how many run at the same time. Nothing asserts a duration; timing belongs in the
benchmarks.
"""
import os
import threading

import pytest

from parla import Parla, spawn, TaskSpace

# Long enough that only a runtime that does not run the bodies together breaks the barrier.
MEET = 20.0


def _meeting(n):
    """A barrier for n bodies, and a body that records the most bodies seen in flight at once."""
    barrier = threading.Barrier(n, timeout=MEET)
    state = {"active": 0, "max": 0}
    lock = threading.Lock()

    def enter():
        with lock:
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])

    def leave():
        with lock:
            state["active"] -= 1
    return barrier, state, enter, leave


@pytest.mark.timeout(60)
def test_sleeping_tasks_overlap():
    # Two bodies that block (GIL released) are in flight together on 2 workers.
    barrier, state, enter, leave = _meeting(2)
    with Parla(n_workers=2):
        T = TaskSpace("S")
        for i in range(2):
            @spawn(T[i])
            def nap():
                enter()
                barrier.wait()
                leave()
                return i

        @spawn(T["end"], dependencies=T[0:2])
        def end():
            return [T[0].result, T[1].result]
    assert end.result == [0, 1]
    assert state["max"] == 2


@pytest.mark.timeout(60)
def test_sleeping_tasks_four_workers():
    # Eight blocking bodies on 4 workers: two rounds of four in flight at once.
    barrier, state, enter, leave = _meeting(4)
    ran = []
    with Parla(n_workers=4):
        for i in range(8):
            @spawn()
            def nap():
                enter()
                barrier.wait()
                leave()
                ran.append(i)
    assert sorted(ran) == list(range(8))
    assert state["max"] == 4


@pytest.mark.timeout(30)
def test_one_worker_serialises():
    # One worker: bodies never overlap, and they all run on worker 0.
    from parla import _core
    _, state, enter, leave = _meeting(1)
    order, workers = [], set()
    with Parla(n_workers=1):
        for i in range(3):
            @spawn()
            def nap():
                enter()
                workers.add(_core.worker_index())
                threading.Event().wait(0.05)  # a chance for another body to start, were there one
                order.append(i)
                leave()
    assert sorted(order) == [0, 1, 2]
    assert workers == {0}
    assert state["max"] == 1


@pytest.mark.timeout(60)
def test_concurrency_observed():
    # Both workers are inside bodies at the same time.
    barrier, state, enter, leave = _meeting(2)
    with Parla(n_workers=2):
        for i in range(6):
            @spawn()
            def body():
                enter()
                barrier.wait()
                leave()
    assert state["max"] == 2


def _sort_kernel(np, n=400_000):
    data = np.random.default_rng(0).random(n)

    def kernel():
        # Sorting a copy of a fixed array: both steps run in C with the GIL released.
        return float(np.sort(data.copy())[0])
    return kernel


@pytest.mark.timeout(60)
def test_numpy_kernels_overlap_in_time():
    # Two bodies inside GIL-releasing kernels are in flight at the same time: each runs kernels until it has
    # seen the other one run a kernel after it started (a runtime running one body at a time never gets
    # there: the first body waits for the second forever, and the bounded loop fails it).
    np = pytest.importorskip("numpy")
    kernel = _sort_kernel(np, 100_000)
    started = [threading.Event(), threading.Event()]
    progressed = [threading.Event(), threading.Event()]
    results = {}
    with Parla(n_workers=2):
        for i in range(2):
            @spawn()
            def k():
                me, other = i, 1 - i
                started[me].set()
                assert started[other].wait(MEET), f"body {other} never started while body {me} ran"
                values = set()
                for _ in range(10_000):
                    values.add(kernel())
                    progressed[me].set()
                    if progressed[other].is_set():
                        break
                else:
                    raise AssertionError(f"body {other} made no progress while body {me} ran 10,000 kernels")
                # Stay in flight until the other body has also seen this one progress.
                progressed[other].wait(MEET)
                results[i] = values
    assert results[0] == results[1] == {kernel()}


@pytest.mark.timeout(60)
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_numpy_kernel_runs_in_parallel():
    # Eight NumPy kernel bodies on 2 workers: in pairs, both bodies of a pair are inside their kernels'
    # section together (each meets the other at a barrier between two kernels), and every body computes the
    # serial result. A runtime that serialised bodies, or held the GIL across a body's blocking call, breaks
    # the barrier.
    np = pytest.importorskip("numpy")
    kernel = _sort_kernel(np)
    expected = kernel()
    barrier, state, enter, leave = _meeting(2)
    n = 8
    tasks = []
    with Parla(n_workers=2):
        for i in range(n):
            @spawn()
            def k():
                enter()
                first = kernel()
                barrier.wait()
                second = kernel()
                leave()
                return first, second
            tasks.append(k)
    assert [t.result for t in tasks] == [(expected, expected)] * n
    assert state["max"] == 2


@pytest.mark.timeout(60)
def test_worker_threads_are_distinct():
    from parla import _core
    barrier = threading.Barrier(2, timeout=MEET)
    idx = set()
    lock = threading.Lock()
    names = set()
    with Parla(n_workers=2):
        for i in range(4):
            @spawn()
            def body():
                with lock:
                    idx.add(_core.worker_index())
                    names.add(threading.get_ident())
                barrier.wait()  # both workers hold a body: neither can take all four
    assert idx == {0, 1}
    assert len(names) == 2
    assert threading.get_ident() not in names
    assert _core.worker_index() == -1
