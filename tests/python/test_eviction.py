"""Eviction on virtual GPUs (issue 5): a working set far larger than the GPUs cycles through them.

4 virtual GPUs of 64 MiB each, 64 PArrays of 16 MiB (1 GiB): results correct, residency never above
capacity, evictions counted; data that cannot fit even after eviction fails with a clear error.
"""
import threading
import time

import numpy as np
import pytest

from parla import Parla, get_current_devices, spawn
from parla.array import asarray
from parla.devices import cpu, gpu

MiB = 2**20



def _sample(rt, peaks, lock):
    table = rt.devices()
    with lock:
        for d in table:
            peaks[d["index"]] = max(peaks.get(d["index"], 0), d["memory_resident"])


@pytest.mark.timeout(60)
def test_1gib_working_set_cycles_through_4_gpus_of_64mib():
    n_arrays, size = 64, 16 * MiB
    elems = size // 8
    arrays = [asarray(np.full(elems, float(i))) for i in range(n_arrays)]
    peaks = {}
    lock = threading.Lock()
    rounds = 2
    with Parla(virtual_gpus=4, gpu_memory=64 * MiB) as p:
        rt = p.runtime
        for r in range(rounds):
            for i, A in enumerate(arrays):
                @spawn(placement=gpu, inout=[A])
                def step(A=A, i=i, r=r):
                    dev = get_current_devices()[0]
                    assert dev.architecture is gpu
                    a = A.array
                    assert a[0] == i + r and a[-1] == i + r and a[elems // 2] == i + r
                    a += 1
                    _sample(rt, peaks, lock)
            # Between rounds: otherwise each array's next task runs right after its previous one, while the
            # copy is still resident, and nothing needs to cycle.
            rt.wait_all()
        table = rt.devices()
        for d in table[1:]:
            assert d["memory_resident"] <= d["memory_capacity"] == 64 * MiB
        evictions = sum(d["evictions"] for d in table[1:])
        bytes_in = sum(d["bytes_in"] for d in table[1:])
        assert evictions > 0, table
        # at most 16 arrays stay resident between rounds: the others come back in
        assert bytes_in >= (rounds * n_arrays - 16) * size, table
        assert all(table[i + 1]["tasks_mapped"] == 0 for i in range(4))
    for index in range(1, 5):
        assert peaks[index] <= 64 * MiB, peaks
    for i, A in enumerate(arrays):
        a = A.array
        assert a[0] == i + rounds and a[-1] == i + rounds and a[elems // 3] == i + rounds, i
    assert all(np.all(A.array == i + rounds) for i, A in enumerate(arrays[:4]))


@pytest.mark.timeout(30)
def test_eviction_writes_back_last_valid_copy():
    arrays = [asarray(np.zeros(4 * MiB // 8)) for _ in range(6)]
    with Parla(virtual_gpus=1, gpu_memory=8 * MiB) as p:
        for i, A in enumerate(arrays):
            @spawn(placement=gpu(0), output=[A])
            def w(A=A, i=i):
                A.array[:] = i + 1
        p.runtime.wait_all()
        info = p.runtime.devices()[1]
        assert info["evictions"] >= 4 and info["memory_resident"] <= 8 * MiB
        assert sum(A.exists_on_device(gpu(0)) for A in arrays) <= 2
        # evicted copies were the only valid ones: written back to the CPU, nothing lost
        for i, A in enumerate(arrays):
            assert A.exists_on_device(cpu(0)) or A.exists_on_device(gpu(0))
            assert A[7] == i + 1


@pytest.mark.timeout(30)
def test_data_bigger_than_a_gpu_fails_with_clear_error():
    with pytest.raises(Exception) as info:
        with Parla(virtual_gpus=4, gpu_memory=64 * MiB):
            B = asarray(np.zeros(65 * MiB // 8))

            @spawn(placement=gpu(1), inout=[B])
            def big():
                B.array[:] += 1
    text = str(info.value) + " ".join(getattr(info.value, "__notes__", []))
    assert "big#" in text and "gpu(1)" in text and str(65 * MiB) in text, text
    assert big.state == "failed"
    assert big.exception is not None
    np.testing.assert_array_equal(B.array[:4], np.zeros(4))


@pytest.mark.timeout(30)
def test_data_that_fits_after_running_tasks_finish_waits():
    """Each task needs 48 MiB on a 64 MiB GPU: they cannot run together, so they must run one after the
    other (waiting, like any resource), not fail."""
    arrays = [asarray(np.full(24 * MiB // 8, float(i))) for i in range(8)]
    with Parla(n_workers=4, virtual_gpus=1, gpu_memory=64 * MiB):
        tasks = []
        for i in range(4):
            @spawn(placement=gpu(0), inout=[arrays[2 * i], arrays[2 * i + 1]])
            def pair(i=i):
                time.sleep(0.05)
                arrays[2 * i].array[:3] += 1
            tasks.append(pair)
    assert [t.state for t in tasks] == ["done"] * 4
    assert [A[0] for A in arrays] == [1.0, 1.0, 3.0, 3.0, 5.0, 5.0, 7.0, 7.0]


@pytest.mark.timeout(60)
def test_tasks_needing_the_whole_gpu_and_half_of_it_all_finish():
    # One virtual GPU holds two arrays. Odd tasks need both slots, even ones one: a task takes its room all at
    # once or waits, so tasks that each hold part of the room cannot keep evicting each other's copies.
    n, count = 4096, 16
    P = [asarray(np.full(n, float(i))) for i in range(count)]
    Q = [asarray(np.ones(n)) for _ in range(count)]
    with Parla(n_workers=4, virtual_gpus=1, gpu_memory=2 * n * 8):
        for i in range(count):
            if i % 2:
                @spawn(placement=gpu(0), inout=[P[i]], input=[Q[i]])
                def two(A=P[i], B=Q[i]):
                    A.array[:] += B.array
            else:
                @spawn(placement=gpu(0), inout=[P[i]])
                def one(A=P[i]):
                    A.array[:] += 1
    for i in range(count):
        assert (P[i].array == i + 1).all(), i


# Run in a subprocess: before the fix both programs spun for ever in the engine's preparation (a task that
# waited for room nothing would ever free), and a hang must fail the test, not the whole run.
_SLICES = """
import numpy as np
from parla import Parla, spawn, TaskSpace
from parla.array import asarray
from parla.devices import gpu
A = asarray(np.zeros({n}))
T = TaskSpace("T")
try:
    with Parla(2, virtual_gpus=1, gpu_memory=20000):
        for i, (a, b) in enumerate({cuts}):
            @spawn(T[i], [T[j] for j in range(i)], placement=gpu(0), inout=[A[a:b]])
            def t(V=A[a:b], i=i):
                V.array[:] += i + 1
    print("OK", [T[i].state for i in range(3)])
except MemoryError as e:
    print("MemoryError", [T[i].state for i in range(3)], e)
print("SUM", float(A.array.sum()))
"""


@pytest.mark.timeout(60)
def test_slices_whose_merged_allocation_exceeds_the_gpu_run_by_writing_back():
    """Three slices of one array on a 20000-byte GPU: the third (A[1690:2500]) touches both others, so a
    merged allocation would be A[1000:3900], 23,200 bytes. The merge writes back what only the old pieces
    hold and drops them instead (user guide, Slices), and all three tasks run with the right values."""
    from conftest import run_python
    code = _SLICES.format(n=4000, cuts=[(1000, 1700), (2200, 3900), (1690, 2500)])
    r = run_python(code, timeout=45)
    assert r.returncode == 0, r.stderr
    assert "OK ['done', 'done', 'done']" in r.stdout, r.stdout + r.stderr
    # 1 on [1000, 1690), 1 + 3 on [1690, 1700), 3 on [1700, 2200), 2 + 3 on [2200, 2500), 2 on [2500, 3900)
    assert "SUM 6530.0" in r.stdout, r.stdout


@pytest.mark.timeout(60)
def test_slice_that_cannot_fit_beside_its_arrays_other_slices_fails_naming_device_and_bytes():
    """Two slices of one array fill a 20000-byte GPU (19,200 bytes) and stay there when their tasks end (the
    copies of other data would be evicted, the task's own array's are not); a third, disjoint slice, spawned
    after both, needs 1600 more bytes. Nothing is in use, so nothing will free room: the task fails with an error naming the task, the
    device, the bytes needed and the capacity, instead of waiting for ever."""
    from conftest import run_python
    code = _SLICES.format(n=5000, cuts=[(0, 1200), (1300, 2500), (2600, 2800)])
    r = run_python(code, timeout=45)
    assert r.returncode == 0, r.stderr
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("MemoryError")), r.stdout)
    assert line.startswith("MemoryError ['done', 'done', 'failed']"), r.stdout + r.stderr
    for word in ("T[2]", "gpu(0)", "1600 more bytes", "20000 bytes"):
        assert word in line, line
    assert "SUM 3600.0" in r.stdout, r.stdout  # 1200 * 1 + 1200 * 2, the failed task wrote nothing
