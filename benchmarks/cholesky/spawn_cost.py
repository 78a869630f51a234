"""The spawning thread's cost per task of the tiled Cholesky of examples/cholesky.py, with nothing running
meanwhile: the one worker is held by a gate task until every task is spawned, so the thread's time and
instructions are the spawns' alone (the tasks then run, after the measured part).

    .venv/bin/python benchmarks/cholesky/spawn_cost.py --tiles 32 [--native] [--reps 5]

prints the spawning thread's CPU time per task (time.thread_time around factor(), median of --reps). For a
count of instructions (which the load of a shared machine does not move), run it under callgrind with one rep:
factor() is called through operator.call, so that callgrind counts only inside it:

    valgrind --tool=callgrind --toggle-collect=_operator_call --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/cholesky/spawn_cost.py --tiles 24 --native --reps 1

("Collected" divided by the tasks printed is the instructions per task, the cycle collector's share
included). Tiles are 8 x 8: the tile size changes nothing in what spawning costs.
"""
from __future__ import annotations

import argparse
import operator
import os
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))

import cholesky  # noqa: E402  (examples/cholesky.py)
from parla import Parla, TaskSpace, spawn  # noqa: E402
from parla.array import asarray  # noqa: E402


def once(tiles: int, block: int, native: bool) -> float:
    """Seconds of the spawning thread's CPU time per task for one factorisation."""
    n = tiles * block
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n))
    a = x @ x.T + n * np.eye(n)
    parrays = [[asarray(t) if t is not None else None for t in row] for row in cholesky.to_tiles(a, block)]
    gate = threading.Event()
    with Parla(n_workers=1):
        spawn(TaskSpace("gate")[0])(gate.wait)  # holds the only worker (the GIL let go while it waits)
        t0 = time.thread_time()
        operator.call(cholesky.factor, parrays, native=native)
        seconds = time.thread_time() - t0
        gate.set()
    return seconds / cholesky.count_tasks(tiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=32, help="tiles per side (32: the 4096/128 task graph)")
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument("--native", action="store_true", help="native task bodies (parla.kernels)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    times = [once(args.tiles, args.block, args.native) for _ in range(args.reps)]
    print(f"{cholesky.count_tasks(args.tiles)} tasks, {'native' if args.native else 'Python'} bodies: "
          f"{statistics.median(times) * 1e6:.2f} us of the spawning thread per task (median of {args.reps})")


if __name__ == "__main__":
    main()
