"""LAPACK baseline for the tiled Cholesky benchmarks: one dpotrf call on the whole matrix, with OpenBLAS
using every core. It is the same OpenBLAS the tiled kernels call (SciPy's bundled libscipy_openblas, through
its Cython function pointer in examples/kernels.py); scipy.linalg.cholesky calls the same dpotrf.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
import kernels  # noqa: E402

__all__ = ["run"]


def run(a: np.ndarray, threads: Optional[int] = None):
    """Factors a copy of ``a`` with dpotrf (lower) using ``threads`` BLAS threads (default: all cores).
    Returns (L, seconds); the time covers the dpotrf call only (the copy is made before)."""
    work = a.copy()  # C order: kernels.potrf calls dpotrf('U') on the column-major view, no transposition copy
    kernels.set_blas_threads(threads or os.cpu_count() or 1)
    try:
        t0 = time.perf_counter()
        kernels.potrf(work)
        seconds = time.perf_counter() - t0
    finally:
        kernels.set_blas_threads(1)
    return np.tril(work), seconds


if __name__ == "__main__":
    import argparse
    from cholesky import gflops, make_spd, residual
    p = argparse.ArgumentParser(description="LAPACK dpotrf baseline")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    a = make_spd(args.n)
    l, s = run(a, args.threads)
    print(f"lapack dpotrf n={args.n}: {s:.3f} s, {gflops(args.n, s):.1f} GFLOP/s")
    if args.check:
        r = residual(a, l)
        print(f"relative residual {r:.3e}")
        assert r < 1e-10
