"""Workers while the main thread spawns: the (d) workload of bench_tasks.py (independent tasks each running a
~100 µs GIL-releasing np.dot) traced, to see whether workers run while tasks are being spawned. A measure that
the machine's load moves less than wall time: bodies started per 10 ms while spawning, against after.

    .venv/bin/python benchmarks/python/bench_busy_trace.py                     # switch_interval 1e-4 and None
    .venv/bin/python benchmarks/python/bench_busy_trace.py --intervals 1e-4,5e-5,none --reps 5

For each run (the intervals alternate, --reps rounds): how long spawning took, how many bodies started
meanwhile (per 10 ms) and after it (per 10 ms), and the first 10 ms windows while spawning. Bodies that wait
for the GIL held by the spawning thread show as windows with few or no starts.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_tasks  # noqa: E402  (sets single-threaded BLAS before NumPy is imported)

from parla import Parla, TaskSpace, spawn  # noqa: E402

WINDOW_US = 10_000


def traced_run(n, workers, kernel, interval, path):
    """Spawns n kernel tasks with a trace; returns the seconds spent spawning."""
    t0 = time.perf_counter()
    with Parla(n_workers=workers, trace=path, switch_interval=interval):
        T = TaskSpace("T")
        for i in range(n):
            spawn(T[i])(kernel)
        spawning = time.perf_counter() - t0
    return spawning


def starts(path):
    """Start times (µs, from the first) of the bodies on the worker tracks of a Chrome trace."""
    with open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    ts = sorted(e["ts"] for e in events if e.get("ph") == "X" and e.get("pid") == 1)
    return [t - ts[0] for t in ts]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--intervals", default="1e-4,none", help="switch_interval values, comma-separated")
    ap.add_argument("--busy-seconds", type=float, default=0.5, help="ideal wall time of a run")
    args = ap.parse_args(argv)
    logging.getLogger("parla.trace").setLevel(logging.WARNING)  # not a line per trace written
    intervals = [None if x.strip().lower() == "none" else float(x) for x in args.intervals.split(",")]
    size, kernel, t_task = bench_tasks.calibrate(100e-6)
    n = int(round(args.busy_seconds * args.workers / t_task))
    print(f"# {n} tasks of {t_task * 1e6:.1f} us (np.dot {size}^2), {args.workers} workers")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.json")
        traced_run(n, args.workers, kernel, None, path)  # warm-up
        for _ in range(args.reps):
            for interval in intervals:
                spawning = traced_run(n, args.workers, kernel, interval, path)
                t = starts(path)
                edge = spawning * 1e6
                during = sum(1 for s in t if s < edge)
                after_windows = max((t[-1] - edge) / WINDOW_US, 1e-9)
                windows = collections.Counter(int(s // WINDOW_US) for s in t if s < edge)
                first = [windows[i] for i in range(min(int(edge // WINDOW_US) + 1, 12))]
                print(f"switch_interval={str(interval):7s} spawning {spawning * 1e3:6.1f} ms: "
                      f"{during / max(edge / WINDOW_US, 1e-9):6.1f} bodies started per 10 ms while spawning, "
                      f"{(len(t) - during) / after_windows:6.1f} after; first windows {first}  "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
