"""CUDA GPUs with CuPy. Skipped (cleanly) where CuPy or a CUDA device is missing, as in CI."""
import os
import sys

import numpy as np
import pytest

from parla import Parla, TaskSpace, spawn
from parla.array import asarray, get_array_module
from parla.devices import cpu, gpu

cupy = pytest.importorskip("cupy")


def _cuda_devices() -> int:
    try:
        with Parla(n_workers=1) as ctx:
            return sum(1 for d in ctx.device_table if d["cuda"])
    except Exception:
        return 0


pytestmark = pytest.mark.skipif(_cuda_devices() == 0, reason="no CUDA device")


@pytest.mark.timeout(120)
def test_cupy_chain_across_gpu_and_cpu():
    A = asarray(np.arange(1024, dtype=np.float64))
    seen = {}
    with Parla(n_workers=2):
        T = TaskSpace("T")

        @spawn(T[0], placement=gpu(0), inout=[A])
        def on_gpu():
            seen["module"] = get_array_module(A.array).__name__
            A.array[:] += 1.0

        @spawn(T[1], [T[0]], placement=cpu, inout=[A])
        def on_cpu():
            A.array[:] *= 2.0

        @spawn(T[2], [T[1]], placement=gpu, input=[A])
        def back_on_gpu():
            seen["sum"] = float(A.array.sum())
    assert seen["module"] == "cupy"
    assert seen["sum"] == float(((np.arange(1024) + 1.0) * 2.0).sum())
    assert np.array_equal(A.array, (np.arange(1024) + 1.0) * 2.0)


@pytest.mark.timeout(300)
def test_cholesky_on_cuda_matches_the_cpu():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
    import cholesky
    a = cholesky.make_spd(1024)
    l_gpu, _ = cholesky.run(a, 256, 2, all_devices=True)
    assert cholesky.residual(a, l_gpu) < 1e-10
