"""CUDA runahead with CuPy: chains of small GPU tasks, Parla against CuPy alone, in one run.

    python benchmarks/python/bench_cuda.py [--tasks 2000] [--n 262144] [--reps 5]

Workload: `chains` independent chains of `tasks` steps each; a step is `x = x * 1.0001 + 1` on a vector of n
float32 (a few µs on the GPU). Parla: one task per step on `gpu`, each declaring `inout=[X_c]`, so the
runtime orders the steps by data hazards; a step's GPU successor starts at its runahead and waits on its
event on the device (no host synchronisation). Peer: the same kernels launched by one Python thread on one
CuPy stream per chain, round robin, then one synchronisation: the floor for launch-bound work. The ratio is
Parla time / CuPy time (lower is better); the result of both is checked against the closed form.
Needs CuPy and a CUDA GPU; prints why and exits 0 without them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--n", type=int, default=1 << 18)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no CuPy, no driver or no device
        print(f"bench_cuda: skipped ({type(e).__name__}: {e})")
        return 0

    from parla import Parla, spawn
    from parla.array import asarray
    from parla.devices import gpu

    def expected(steps: int) -> float:
        v = 0.0
        for _ in range(steps):
            v = np.float32(np.float32(v) * np.float32(1.0001) + np.float32(1))
        return float(v)

    def run_parla() -> float:
        arrays = [asarray(np.zeros(args.n, dtype=np.float32)) for _ in range(args.chains)]
        with Parla() as ctx:
            t0 = time.perf_counter()
            for _ in range(args.tasks):
                for X in arrays:
                    @spawn(placement=gpu, inout=[X])
                    def step(X=X):
                        a = X.array
                        a *= np.float32(1.0001)
                        a += np.float32(1)
            ctx.runtime.wait_all()
            elapsed = time.perf_counter() - t0
        for X in arrays:
            assert abs(float(X.array[0]) - expected(args.tasks)) <= 1e-3 * abs(expected(args.tasks)), X.array[0]
        return elapsed

    def run_cupy() -> float:
        xs = [cupy.zeros(args.n, dtype=cupy.float32) for _ in range(args.chains)]
        streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(args.chains)]
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        for _ in range(args.tasks):
            for x, s in zip(xs, streams):
                with s:
                    x *= np.float32(1.0001)
                    x += np.float32(1)
        for s in streams:
            s.synchronize()
        elapsed = time.perf_counter() - t0
        for x in xs:
            assert abs(float(x[0]) - expected(args.tasks)) <= 1e-3 * abs(expected(args.tasks)), x[0]
        return elapsed

    run_parla(), run_cupy()  # warm up (kernel compilation, pools)
    parla_t, cupy_t = [], []
    for _ in range(args.reps):
        parla_t.append(run_parla())
        cupy_t.append(run_cupy())
    steps = args.tasks * args.chains
    p, c = statistics.median(parla_t), statistics.median(cupy_t)
    print(f"{steps} steps of {args.n} float32 in {args.chains} chains, medians of {args.reps}")
    print(f"  Parla (gpu tasks, runahead): {p / steps * 1e6:8.2f} us/step")
    print(f"  CuPy (one thread, streams):  {c / steps * 1e6:8.2f} us/step")
    print(f"  ratio Parla/CuPy: {p / c:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
