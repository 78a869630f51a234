"""The spawn path in C against the general spawn in Python, alternately in one process (so the load of a
shared machine falls on both alike):

    .venv/bin/python benchmarks/python/bench_spawn_paths.py [--tasks 50000] [--reps 5]

C path: ``@spawn(T[i])`` / ``@spawn(T[i], [T[i - 1]])``, made by parla._core in one call. Python path: the
same with ``priority=0``, which sends the spawn through parla.tasks._spawn (every argument checked in Python,
as every spawn was before the C path; it ends in the same Task._submit). Prints µs per task (spawn, run and
wait, 2 workers, context start and exit included) for independent named tasks and for a chain, medians of
--reps runs, and the ratio Python / C.
"""
from __future__ import annotations

import argparse
import statistics
import time

from parla import Parla, TaskSpace, spawn


def independent(n: int, c_path: bool) -> float:
    t0 = time.perf_counter()
    with Parla(n_workers=2):
        T = TaskSpace("T")
        if c_path:
            for i in range(n):
                @spawn(T[i])
                def task() -> None:
                    pass
        else:
            for i in range(n):
                @spawn(T[i], priority=0)
                def task() -> None:
                    pass
    return (time.perf_counter() - t0) / n * 1e6


def chain(n: int, c_path: bool) -> float:
    t0 = time.perf_counter()
    with Parla(n_workers=2):
        T = TaskSpace("T")
        if c_path:
            for i in range(n):
                @spawn(T[i], [T[i - 1]])
                def task() -> None:
                    pass
        else:
            for i in range(n):
                @spawn(T[i], [T[i - 1]], priority=0)
                def task() -> None:
                    pass
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    for name, fn in (("independent, named", independent), ("chain", chain)):
        fn(args.tasks, True)  # warm-up
        fn(args.tasks, False)
        c, p = [], []
        for _ in range(args.reps):
            c.append(fn(args.tasks, True))
            p.append(fn(args.tasks, False))
        mc, mp = statistics.median(c), statistics.median(p)
        print(f"{name:<20} C path {mc:6.2f} us/task   Python path {mp:6.2f} us/task   Python / C {mp / mc:5.2f}")


if __name__ == "__main__":
    main()
