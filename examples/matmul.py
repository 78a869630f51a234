"""Blocked matrix multiplication C = A @ B with every tile a PArray.

    python examples/matmul.py --n 1024 --block 256
    python examples/matmul.py --n 1024 --block 256 --virtual-gpus 2 --mode chain

A is m x k, B is k x n (``--m/--k`` default to ``--n``); all three are cut into tiles of at most
``--block`` rows and columns. Two ways to schedule the same arithmetic:

- ``--mode tile`` (default): one task per C tile. It reads a row of A tiles and a column of B tiles
  (``input=``), writes its C tile (``output=``) and sums the k products inside the body.
- ``--mode chain``: one task per (i, j, l) product. The first writes C[i, j] (``output=``), the next ones
  add to it (``inout=``), so the runtime chains the updates of one tile while different tiles proceed in
  parallel. No task lists a dependency.

Placement: ``any`` (default) gives every task placement=[cpu, gpu], the runtime picks a device using data
locality and load; ``round-robin`` pins C tile number t to device t mod D of [cpu(0), gpu(0), ...]. Input
tiles are copied to wherever they are needed, once per device.

The result is compared with NumPy's A @ B (np.allclose, rtol 1e-10); exits with status 1 on a mismatch.
Prints GFLOP/s counting 2 m n k floating-point operations. Run as a script, OpenBLAS is limited to one thread
per task (OPENBLAS_NUM_THREADS=1 unless already set), as the tiled Cholesky does.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

if __name__ == "__main__" and "numpy" not in sys.modules:
    # The parallelism comes from the tasks: one BLAS thread per task. Several tasks each running a
    # multi-threaded OpenBLAS oversubscribe the cores and run about ten times slower on a small machine.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from parla import Parla, TaskSpace, get_current_devices, spawn
from parla.array import asarray
from parla.devices import cpu, get_all_devices, gpu

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_runtime_options, parla_options  # noqa: E402  (examples/common.py)


def bounds(size: int, block: int) -> List[int]:
    """Tile boundaries [0, block, 2 block, ..., size] (the last tile may be smaller)."""
    if block <= 0:
        raise ValueError(f"--block must be positive, not {block}")
    return list(range(0, size, block)) + [size]


def tiles(matrix: np.ndarray, rows: List[int], cols: List[int]) -> List[List[Any]]:
    """The matrix cut into PArray tiles (each a contiguous copy)."""
    return [[asarray(np.ascontiguousarray(matrix[rows[i]:rows[i + 1], cols[j]:cols[j + 1]]))
             for j in range(len(cols) - 1)] for i in range(len(rows) - 1)]


def matmul_parla(A: np.ndarray, B: np.ndarray, block: int, mode: str = "tile",
                 placement: str = "any") -> Dict[str, Any]:
    """Spawns the blocked product inside the active Parla context. Returns the C tiles (final once the
    context exits), the boundaries and the tasks."""
    m, k = A.shape
    k2, n = B.shape
    if k != k2:
        raise ValueError(f"A is {A.shape} and B is {B.shape}: inner sizes differ")
    rb, kb, cb = bounds(m, block), bounds(k, block), bounds(n, block)
    At, Bt = tiles(A, rb, kb), tiles(B, kb, cb)
    Ct = [[asarray(np.empty((rb[i + 1] - rb[i], cb[j + 1] - cb[j]), dtype=np.result_type(A, B)))
           for j in range(len(cb) - 1)] for i in range(len(rb) - 1)]
    devices = get_all_devices()
    any_device = [cpu, gpu] if len(devices) > 1 else cpu
    nk = len(kb) - 1

    T = TaskSpace("C")
    for i in range(len(rb) - 1):
        for j in range(len(cb) - 1):
            c = Ct[i][j]
            where = devices[(i * (len(cb) - 1) + j) % len(devices)] if placement == "round-robin" else any_device
            if mode == "tile":
                a_row = [At[i][l] for l in range(nk)]
                b_col = [Bt[l][j] for l in range(nk)]

                @spawn(T[i, j], placement=where, input=a_row + b_col, output=[c])
                def _tile() -> str:
                    acc = a_row[0].array @ b_col[0].array
                    for a, b in zip(a_row[1:], b_col[1:]):
                        acc += a.array @ b.array
                    c.array[...] = acc
                    return str(get_current_devices()[0])
            elif mode == "chain":
                for l in range(nk):
                    a, b = At[i][l], Bt[l][j]
                    first = l == 0
                    access: Dict[str, Any] = {"output": [c]} if first else {"inout": [c]}

                    @spawn(T[i, j, l], placement=where, input=[a, b], **access)
                    def _product() -> str:
                        if first:
                            c.array[...] = a.array @ b.array
                        else:
                            c.array[...] += a.array @ b.array
                        return str(get_current_devices()[0])
            else:
                raise ValueError(f"unknown mode {mode!r} (tile or chain)")
    return {"C": Ct, "rows": rb, "cols": cb, "tasks": T}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="columns of B and C (default 1024)")
    ap.add_argument("--m", type=int, default=None, help="rows of A and C (default: n)")
    ap.add_argument("--k", type=int, default=None, help="columns of A, rows of B (default: n)")
    ap.add_argument("--block", type=int, default=256, help="tile size (default 256)")
    ap.add_argument("--mode", choices=["tile", "chain"], default="tile",
                    help="tile: one task per C tile; chain: one task per tile product, inout chains")
    add_runtime_options(ap, ["any", "round-robin"])
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the example. Returns {"ok", "max_rel_error", "seconds", "gflops", "tasks", "devices"}; "devices"
    counts the tasks per device they ran on."""
    args = parse_args(argv)
    m = args.m or args.n
    k = args.k or args.n
    rng = np.random.default_rng(args.seed)
    A = rng.standard_normal((m, k))
    B = rng.standard_normal((k, args.n))
    options = parla_options(args)

    start = time.perf_counter()
    with Parla(n_workers=args.workers, **options):
        state = matmul_parla(A, B, args.block, args.mode, args.placement)
    seconds = time.perf_counter() - start

    rb, cb = state["rows"], state["cols"]
    C = np.empty((m, args.n))
    for i in range(len(rb) - 1):
        for j in range(len(cb) - 1):
            C[rb[i]:rb[i + 1], cb[j]:cb[j + 1]] = np.asarray(state["C"][i][j])
    expected = A @ B
    scale = max(float(np.max(np.abs(expected))), 1.0)
    max_rel_error = float(np.max(np.abs(C - expected))) / scale
    ok = bool(np.allclose(C, expected, rtol=1e-10, atol=1e-10 * scale))
    devices: Dict[str, int] = {}
    for task in state["tasks"]:
        devices[task.result] = devices.get(task.result, 0) + 1
    gflops = 2.0 * m * args.n * k / seconds / 1e9
    if not args.quiet:
        print(f"matmul: {m}x{k} @ {k}x{args.n}, block {args.block}, mode {args.mode}, "
              f"virtual_gpus={args.virtual_gpus}, placement {args.placement}")
        print(f"  {len(state['tasks'])} tasks in {seconds:.3f} s = {gflops:.2f} GFLOP/s; tasks per device {devices}")
        print(f"  max |C - A@B| / max |A@B| = {max_rel_error:.3e}  ->  {'OK' if ok else 'MISMATCH'}")
        if args.trace:
            print(f"  trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    return {"ok": ok, "max_rel_error": max_rel_error, "seconds": seconds, "gflops": gflops,
            "tasks": len(state["tasks"]), "devices": devices}


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
