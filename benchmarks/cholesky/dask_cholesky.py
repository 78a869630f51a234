"""The same right-looking tiled Cholesky as examples/cholesky.py, as a Dask task graph run by Dask's threaded
scheduler, with the same GIL-free kernels (examples/kernels.py) and one OpenBLAS thread per task.

The graph is a plain Dask graph (a dict of key -> task tuple); each key names one version of a tile:
('A', i, j, s) is tile (i, j) after step s - 1 has updated it (s = 0: the input). The kernels work in place
and return the tile they wrote, which is safe here because every tile version has exactly one consumer
that writes it (the next update), and its other readers run only after the final version exists.
Dask orders ready tasks with dask.order (no user priorities in the threaded scheduler).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
import kernels  # noqa: E402

__all__ = ["build_graph", "run"]


def _potrf(a):
    return kernels.potrf(a)


def _trsm(l, b):
    return kernels.trsm(l, b)


def _syrk(a, c):
    return kernels.syrk(a, c)


def _gemm(a, b, c):
    return kernels.gemm(a, b, c)


def build_graph(tiles: List[List[Optional[np.ndarray]]]) -> Tuple[Dict[Any, Any], List[Any]]:
    """The Dask graph factoring ``tiles`` (lower tiles, C-contiguous) and the keys of the final tiles."""
    nt = len(tiles)
    dsk: Dict[Any, Any] = {}
    for i in range(nt):
        for j in range(i + 1):
            dsk[("A", i, j, 0)] = tiles[i][j]
    # Final tile (i, j) (j <= i) is version j + 1 (after POTRF/TRSM at step j); its last update was at j - 1.
    for k in range(nt):
        dsk[("A", k, k, k + 1)] = (_potrf, ("A", k, k, k))
        for i in range(k + 1, nt):
            dsk[("A", i, k, k + 1)] = (_trsm, ("A", k, k, k + 1), ("A", i, k, k))
        for i in range(k + 1, nt):
            dsk[("A", i, i, k + 1)] = (_syrk, ("A", i, k, k + 1), ("A", i, i, k))
            for j in range(k + 1, i):
                dsk[("A", i, j, k + 1)] = (_gemm, ("A", i, k, k + 1), ("A", j, k, k + 1), ("A", i, j, k))
    keys = [("A", i, j, j + 1) for i in range(nt) for j in range(i + 1)]
    return dsk, keys


def run(a: np.ndarray, block: int, workers: Optional[int] = None):
    """Factors ``a`` (not modified) with Dask; returns (L, seconds). The time covers dask.threaded.get
    (graph ordering and execution), not building the graph dict or the tile copies."""
    import dask.threaded
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
    from cholesky import from_tiles, to_tiles
    kernels.set_blas_threads(1)
    n = a.shape[0]
    tiles = to_tiles(a, block)
    dsk, keys = build_graph(tiles)
    t0 = time.perf_counter()
    results = dask.threaded.get(dsk, keys, num_workers=workers or os.cpu_count())
    seconds = time.perf_counter() - t0
    nt = len(tiles)
    out: List[List[Optional[np.ndarray]]] = [[None] * nt for _ in range(nt)]
    for (_, i, j, _), t in zip(keys, results):
        out[i][j] = t
    return from_tiles(out, n), seconds


if __name__ == "__main__":
    import argparse
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
    from cholesky import gflops, make_spd, residual
    p = argparse.ArgumentParser(description="Dask tiled Cholesky with GIL-free kernels")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    a = make_spd(args.n)
    l, s = run(a, args.block, args.workers)
    print(f"dask n={args.n} block={args.block}: {s:.3f} s, {gflops(args.n, s):.1f} GFLOP/s")
    if args.check:
        r = residual(a, l)
        print(f"relative residual {r:.3e}")
        assert r < 1e-10
