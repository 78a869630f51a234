"""Bodies that release the GIL run in parallel on the worker threads."""
import os
import threading
import time

import pytest

from parla import Parla, spawn, TaskSpace


@pytest.mark.timeout(10)
def test_sleeping_tasks_overlap():
    with Parla(n_workers=2):
        t0 = time.perf_counter()
        T = TaskSpace("S")
        for i in range(2):
            @spawn(T[i])
            def nap():
                time.sleep(0.3)

        @spawn(T["end"], dependencies=T[0:2])
        def end():
            return time.perf_counter()
    elapsed = end.result - t0
    assert elapsed < 0.5, f"two 0.3 s sleeps on 2 workers took {elapsed:.3f} s"


@pytest.mark.timeout(10)
def test_sleeping_tasks_four_workers():
    t0 = time.perf_counter()
    with Parla(n_workers=4):
        for i in range(8):
            @spawn()
            def nap():
                time.sleep(0.2)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.6, f"eight 0.2 s sleeps on 4 workers took {elapsed:.3f} s"


@pytest.mark.timeout(10)
def test_one_worker_serialises():
    t0 = time.perf_counter()
    with Parla(n_workers=1):
        for i in range(3):
            @spawn()
            def nap():
                time.sleep(0.1)
    assert time.perf_counter() - t0 >= 0.29


@pytest.mark.timeout(10)
def test_concurrency_observed():
    # Both workers are inside bodies at the same time.
    active = [0, 0]
    lock = threading.Lock()
    with Parla(n_workers=2):
        for i in range(6):
            @spawn()
            def body():
                with lock:
                    active[0] += 1
                    active[1] = max(active[1], active[0])
                time.sleep(0.05)
                with lock:
                    active[0] -= 1
    assert active[1] == 2


def _sort_kernel(np, n=400_000):
    data = np.random.default_rng(0).random(n)

    def kernel():
        # Sorting a copy of a fixed array: both steps run in C with the GIL released.
        return float(np.sort(data.copy())[0])
    return kernel


@pytest.mark.timeout(20)
def test_numpy_kernels_overlap_in_time():
    # Robust on a loaded machine: two bodies inside GIL-releasing kernels are in flight at the same time.
    np = pytest.importorskip("numpy")
    kernel = _sort_kernel(np, 1_000_000)
    spans = {}
    with Parla(n_workers=2):
        for i in range(2):
            @spawn()
            def k():
                t0 = time.perf_counter()
                for _ in range(5):
                    kernel()
                spans[i] = (t0, time.perf_counter())
    (a0, a1), (b0, b1) = spans[0], spans[1]
    overlap = min(a1, b1) - max(a0, b0)
    assert overlap > 0.5 * min(a1 - a0, b1 - b0), spans


@pytest.mark.timeout(30)
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_numpy_kernel_runs_in_parallel():
    np = pytest.importorskip("numpy")
    from concurrent.futures import ThreadPoolExecutor
    kernel = _sort_kernel(np)
    kernel()
    n = 8

    def serial_run():
        t0 = time.perf_counter()
        for _ in range(n):
            kernel()
        return time.perf_counter() - t0

    def parla_run():
        tasks = []
        t0 = time.perf_counter()
        with Parla(n_workers=2):
            for i in range(n):
                @spawn()
                def k():
                    return kernel()
                tasks.append(k)
        return time.perf_counter() - t0, tasks

    def tpe_run():
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as ex:
            list(ex.map(lambda _: kernel(), range(n)))
        return time.perf_counter() - t0

    # Best of (up to) seven interleaved runs. On a quiet 2-core machine the speedup is ~1.8; on a loaded one
    # (shared CI) the test accepts Parla matching ThreadPoolExecutor measured in the same conditions.
    # A runtime that serialised the bodies would be no faster than the serial loop.
    serial = parallel = tpe = float("inf")
    results = None
    for _ in range(7):
        serial = min(serial, serial_run())
        elapsed, tasks = parla_run()
        if elapsed < parallel:
            parallel, results = elapsed, tasks
        tpe = min(tpe, tpe_run())
        if serial / parallel > 1.5:
            break
    assert all(r.result == results[0].result for r in results)
    speedup = serial / parallel
    assert speedup > 1.3 or (parallel <= 1.25 * tpe and speedup > 1.05), \
        f"serial {serial:.3f} s, Parla 2 workers {parallel:.3f} s (speedup {speedup:.2f}), TPE {tpe:.3f} s"


@pytest.mark.timeout(10)
def test_worker_threads_are_distinct():
    from parla import _core
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
                time.sleep(0.05)
    assert idx == {0, 1}
    assert len(names) == 2
    assert threading.get_ident() not in names
    assert _core.worker_index() == -1
