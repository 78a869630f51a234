"""The main demo (``make demo``): tiled Cholesky with Parla, traced, beside LAPACK and Dask.

1. Factors a random SPD matrix (n = 4096, tiles of 512) with Parla on all cores plus 2 virtual GPUs (or the
   real GPUs when CUDA devices are present), with tracing on; checks the relative residual and prints the
   trace summary (tasks and busy time per device, bytes moved, the critical path).
2. Times the same factorisation, interleaved over a few rounds, with Parla on the CPU, LAPACK ``dpotrf``
   (one call, all cores) and Dask's threaded scheduler running the same tiled algorithm with the same
   GIL-free kernels, and prints GFLOP/s (n^3/3 flops) and the ratios.

    python examples/demo.py [--n 4096] [--block 512] [--rounds 3] [--virtual-gpus 2] [--out out/]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "benchmarks", "cholesky"))

import numpy as np  # noqa: E402

import cholesky  # noqa: E402
import dask_cholesky  # noqa: E402
import kernels  # noqa: E402
import lapack_cholesky  # noqa: E402
from parla import Parla  # noqa: E402


def has_cuda() -> bool:
    with Parla(n_workers=1) as p:
        return p.has_cuda


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per system (medians)")
    parser.add_argument("--virtual-gpus", type=int, default=2, help="virtual GPUs for the traced run")
    parser.add_argument("--out", default=os.path.join(ROOT, "out"), help="folder for the trace files")
    args = parser.parse_args(argv)
    workers = os.cpu_count() or 1
    os.makedirs(args.out, exist_ok=True)
    trace = os.path.join(args.out, "cholesky-trace.json")
    graph = os.path.join(args.out, "cholesky-graph.dot")

    a = cholesky.make_spd(args.n)
    nt = -(-args.n // args.block)
    cuda = has_cuda()
    gpus = "the CUDA GPUs" if cuda else f"{args.virtual_gpus} virtual GPUs"
    print(f"Parla in C demo: tiled Cholesky, n={args.n}, block={args.block} ({nt}x{nt} tiles, "
          f"{cholesky.count_tasks(nt)} tasks), {workers} workers, OpenBLAS: {kernels.blas_library_path()}")

    # 1. The traced run on every device.
    print(f"\n[1] Parla on cpu + {gpus}, placement=[cpu, gpu], tracing on")
    l_cpu, _ = cholesky.run(a, args.block, workers)
    l, seconds = cholesky.run(a, args.block, workers, virtual_gpus=0 if cuda else args.virtual_gpus,
                              trace=trace, graph=graph, summary=True, all_devices=True)
    res = cholesky.residual(a, l)
    same = np.max(np.abs(l - l_cpu)) / np.max(np.abs(l_cpu))
    print(f"time {seconds:.3f} s, {cholesky.gflops(args.n, seconds):.1f} GFLOP/s; "
          f"relative residual ||L L^T - A||_F / ||A||_F = {res:.2e}; "
          f"max difference from the CPU-only result (relative) = {same:.1e}")
    print("  (one run with tracing on and tiles copied to and from the GPUs: its GFLOP/s is below the untraced, "
          "CPU-only medians of [2], and is not a figure to compare)")
    if not res < 1e-10 or not same < 1e-12:
        print("FAILED: the factorisation is wrong")
        return 1

    # 2. Side by side, interleaved rounds.
    print(f"\n[2] GFLOP/s, {args.rounds} interleaved rounds after a warm-up (medians); "
          f"tiled systems use 1 BLAS thread per task, LAPACK uses {workers} threads")
    systems: Dict[str, Callable[[], Tuple[np.ndarray, float]]] = {
        f"Parla (C engine), {workers} workers": lambda: cholesky.run(a, args.block, workers),
        f"Dask threaded, {workers} workers": lambda: dask_cholesky.run(a, args.block, workers),
        f"LAPACK dpotrf, {workers} threads": lambda: lapack_cholesky.run(a, workers),
    }
    times: Dict[str, List[float]] = {name: [] for name in systems}
    for round_ in range(args.rounds + 1):
        for name, fn in systems.items():
            time.sleep(0.5)  # let OpenBLAS's idle threads from the previous system stop spinning
            l_sys, t = fn()
            if round_ == 0 and cholesky.residual(a, l_sys) > 1e-10:
                print(f"FAILED: {name} gave a wrong factor")
                return 1
            if round_ > 0:
                times[name].append(t)
    rates = {name: cholesky.gflops(args.n, statistics.median(t)) for name, t in times.items()}
    parla_rate = next(iter(rates.values()))
    print(f"{'system':36s} {'GFLOP/s':>8s} {'Parla / system':>15s}")
    for name, rate in rates.items():
        print(f"{name:36s} {rate:8.1f} {parla_rate / rate:14.2f}x")

    print(f"\ntrace: {trace}\n  open it at https://ui.perfetto.dev (drag the file in) or chrome://tracing")
    print(f"task graph: {graph}  (render: dot -Tsvg {graph} -o graph.svg)")
    try:
        from parla.trace import plot
        picture = os.path.join(args.out, "cholesky-trace.png")
        plot(trace, picture, title=f"Parla tiled Cholesky, n={args.n}, block={args.block}")
        print(f"Gantt chart: {picture}  (python -m parla.trace plot {trace} -o {picture})")
    except ImportError as e:
        print(f"no Gantt chart: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
