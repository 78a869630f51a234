"""Cost of tracing: the same program of 10 µs tasks with tracing off and on, in one run.

    .venv/bin/python benchmarks/python/bench_trace.py [--tasks 50000] [--reps 5]

Each task runs a NumPy kernel of fixed size that takes about 10 µs on one thread (calibrated at start).
Runs alternate off/on; the table gives medians of µs per task (spawn + run + wait) and the ratio on/off.
Tracing on writes nothing until the end; the time to write the trace files is reported separately. Off,
the engine's cost is one predictable branch per event (there is no build without the hooks to compare).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from parla import Parla, spawn  # noqa: E402


def calibrate(target: float = 10e-6) -> int:
    """Matrix order whose np.dot takes about target seconds."""
    for n in range(8, 400, 2):
        a = np.random.rand(n, n)
        t0 = time.perf_counter()
        for _ in range(200):
            np.dot(a, a)
        if (time.perf_counter() - t0) / 200 >= target:
            return n
    return 400


def run(n_tasks: int, a: np.ndarray, trace: str | None) -> tuple[float, float]:
    """(µs per task until every task is done, seconds to leave the context, i.e. write the trace)."""
    ctx = Parla(trace=trace) if trace else Parla()
    with ctx:
        t1 = time.perf_counter()
        for _ in range(n_tasks):
            @spawn()
            def body():
                np.dot(a, a)
        ctx.runtime.wait_all()
        t_done = time.perf_counter()
    return (t_done - t1) / n_tasks * 1e6, time.perf_counter() - t_done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    n = calibrate()
    a = np.random.rand(n, n)
    t0 = time.perf_counter()
    for _ in range(1000):
        np.dot(a, a)
    kernel_us = (time.perf_counter() - t0) / 1000 * 1e6
    off, on, write = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        run(2000, a, None)
        for _ in range(args.reps):
            off.append(run(args.tasks, a, None)[0])
            per_task, seconds = run(args.tasks, a, path)
            on.append(per_task)
            write.append(seconds)
        size = os.path.getsize(path)
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"# bench_trace: {args.tasks} tasks of np.dot({n}x{n}) = {kernel_us:.1f} us, "
          f"{os.cpu_count()} CPUs, median of {args.reps}")
    print(f"{'tracing':10s} {'us/task':>9s}   runs")
    print(f"{'off':10s} {m_off:9.2f}   {' '.join(f'{x:.2f}' for x in off)}")
    print(f"{'on':10s} {m_on:9.2f}   {' '.join(f'{x:.2f}' for x in on)}")
    print(f"tracing on / off: {m_on / m_off:.3f} (target <= 1.10); writing the trace at exit: "
          f"{statistics.median(write):.2f} s for {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
