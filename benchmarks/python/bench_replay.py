"""Graph replay against re-spawning, in one run: 100 iterations of a 1,000-task Jacobi sweep.

    .venv/bin/python benchmarks/python/bench_replay.py            # medians of 5 runs
    .venv/bin/python benchmarks/python/bench_replay.py --quick    # 3 runs, 30 iterations
    valgrind --tool=callgrind --toggle-collect=functools_reduce \
        .venv/bin/python benchmarks/python/bench_replay.py --count 20   # instructions of 20 replays

The workload is examples/jacobi.py's (its code: jacobi_setup): an N x N grid cut into P row bands (P = 500,
N = 502: one own row per band), each band one PArray with halo rows as PArray views; one iteration is P
sweep tasks (inout = the band) and P halo tasks (output = the band's halo rows, input = the neighbours'
edge rows): 1,000 tasks with 2,496 declared accesses and no explicit dependency (the accesses order them).
The bodies are the example's NumPy relaxation and halo copies.

  respawn   each iteration spawned from Python with @spawn (the peer: examples/jacobi.py without --replay)
  replay    iteration 0 spawned inside ``with parla.capture() as g:``, the 99 others ``g.replay()``

Figures, medians over runs:
  spawn us/task   time in the spawning calls (the @spawn loop of an iteration, or g.replay()) per task,
                  the median over the iterations after the first: what replay removes
  spawn cpu us    the same, in CPU time of the spawning thread (time.thread_time: what a loaded machine,
                  where the thread waits for a core, does not inflate)
  total us/task   from the context's start to its end (every body has run) per task

--count N captures the graph, replays it once, then issues N replays from inside one functools.reduce call
and prints nothing else: callgrind's --toggle-collect=functools_reduce then counts the instructions of the
replaying thread through the whole Python g.replay() calls (divide by N x tasks).

The ratio respawn/replay is printed for each figure (> 1: replay faster). Targets (issue 12): replay
<= 0.5 us per task and >= 5x re-spawning. benchmarks/c/bench_replay.c measures the same graph from C
(replay against creating the tasks again in C, and without accesses).
"""
from __future__ import annotations

import os

# Single-threaded BLAS (as in bench_tasks.py): idle BLAS threads would spin beside the workers.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Dict, List  # noqa: E402

from parla import Parla, capture  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
import jacobi  # noqa: E402  (examples/jacobi.py: the workload, its bodies and its spawning code)


def run(mode: str, partitions: int, iterations: int, workers: int) -> Dict[str, float]:
    """One run; returns {"spawn", "spawn_cpu": us per task (medians over iterations 1..), "total": us per
    task}."""
    grid = jacobi.make_grid(partitions + 2)
    spawn_times: List[float] = []
    spawn_cpu: List[float] = []
    start = time.perf_counter()
    with Parla(n_workers=workers):
        spawn_iteration = jacobi.jacobi_setup(grid, partitions)["spawn_iteration"]
        for t in range(iterations):
            t0, c0 = time.perf_counter(), time.thread_time()
            if mode == "respawn":
                tasks = spawn_iteration(t)
            elif t == 0:
                with capture("jacobi") as g:
                    tasks = spawn_iteration(0)
            else:
                g.replay()
            spawn_times.append(time.perf_counter() - t0)
            spawn_cpu.append(time.thread_time() - c0)
    total = time.perf_counter() - start
    return {"spawn": statistics.median(spawn_times[1:]) / tasks * 1e6,
            "spawn_cpu": statistics.median(spawn_cpu[1:]) / tasks * 1e6,
            "total": total / (tasks * iterations) * 1e6}


def count(partitions: int, replays: int, workers: int) -> None:
    """Issues `replays` replays inside one functools.reduce call (for callgrind's --toggle-collect)."""
    grid = jacobi.make_grid(partitions + 2)
    with Parla(n_workers=workers):
        spawn_iteration = jacobi.jacobi_setup(grid, partitions)["spawn_iteration"]
        with capture("jacobi") as g:
            tasks = spawn_iteration(0)
        g.replay()
        functools.reduce(lambda _, __: g.replay(), range(replays), None)
    print(f"bench_replay --count: {replays} replays of {tasks} tasks counted inside functools.reduce")


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs of 30 iterations")
    ap.add_argument("--reps", type=int, default=None, help="runs per figure (default 5, --quick 3)")
    ap.add_argument("--iterations", type=int, default=None, help="iterations per run (default 100)")
    ap.add_argument("--partitions", type=int, default=500, help="bands (tasks per iteration = 2 x bands)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--count", type=int, default=None, metavar="N",
                    help="only issue N replays inside functools.reduce (for callgrind, see above)")
    args = ap.parse_args(argv)
    if args.count is not None:
        count(args.partitions, args.count, args.workers)
        return 0
    reps = args.reps or (3 if args.quick else 5)
    iterations = args.iterations or (30 if args.quick else 100)
    print(f"bench_replay: {iterations} iterations of a {2 * args.partitions}-task Jacobi sweep, "
          f"{args.workers} workers, medians of {reps} runs (us per task)")
    print(f"{'figure':14} {'respawn':>9} {'replay':>9} {'respawn/replay':>15}")
    keys = ("spawn", "spawn_cpu", "total")
    figures: Dict[str, Dict[str, List[float]]] = {m: {k: [] for k in keys} for m in ("respawn", "replay")}
    for _ in range(reps):
        for mode in ("respawn", "replay"):   # interleaved: both see the same machine load
            out = run(mode, args.partitions, iterations, args.workers)
            for key in keys:
                figures[mode][key].append(out[key])
    for key, label in (("spawn", "spawn us/task"), ("spawn_cpu", "spawn cpu us"), ("total", "total us/task")):
        a = statistics.median(figures["respawn"][key])
        b = statistics.median(figures["replay"][key])
        print(f"{label:14} {a:9.2f} {b:9.3f} {a / b:14.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
