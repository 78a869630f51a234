"""Runahead on virtual GPUs, seen from Python: a GPU task is done for its GPU-only dependents when its body
returns; dependents that may run on the CPU wait until its device has finished the work queued before it."""
import numpy as np
import pytest

from parla import Parla, TaskSpace, spawn
from parla.array import asarray
from parla.devices import cpu, gpu


@pytest.mark.timeout(60)
def test_gpu_dependents_start_during_runahead_cpu_dependents_after():
    seen_gpu, seen_cpu = [], []
    for _ in range(5):
        big = asarray(np.zeros(96 * 2**20 // 8))
        with Parla(n_workers=2, virtual_gpus=2):
            T = TaskSpace("T")

            @spawn(T["copy"], placement=gpu(0), input=[big])  # keeps gpu(0)'s copy engine busy
            def reads_big():
                pass

            @spawn(T["a"], placement=gpu(0))
            def a():
                return "a"

            @spawn(T["b"], [T["a"]], placement=gpu(1))
            def b():
                seen_gpu.append(T["a"].state)

            @spawn(T["c"], [T["a"]], placement=cpu)
            def c():
                seen_cpu.append(T["a"].state)
        assert T["a"].state == "done" and T["a"].result == "a"
    assert set(seen_cpu) == {"done"}
    assert set(seen_gpu) <= {"runahead", "done"}
    assert "runahead" in seen_gpu, seen_gpu


@pytest.mark.timeout(30)
def test_gpu_chains_give_the_same_results():
    A = asarray(np.arange(100.0))
    with Parla(n_workers=2, virtual_gpus=2):
        T = TaskSpace("T")
        for i in range(20):
            @spawn(T[i], [T[i - 1]] if i else [], placement=gpu(i % 2), inout=[A])
            def step(i=i):
                A.array[:] = A.array * 0.5 + i

        @spawn(T["end"], [T[19]], placement=cpu, input=[A])
        def check():
            return A.array.copy()
    expect = np.arange(100.0)
    for i in range(20):
        expect = expect * 0.5 + i
    assert np.array_equal(T["end"].result, expect)
