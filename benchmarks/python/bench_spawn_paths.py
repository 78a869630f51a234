"""The spawn path in C against the general spawn in Python, alternately in one process (so the load of a
shared machine falls on both alike):

    .venv/bin/python benchmarks/python/bench_spawn_paths.py [--tasks 50000] [--reps 5]

C path: ``@spawn(T[i])`` / ``@spawn(T[i], [T[i - 1]])`` / ``@spawn(T[i], placement=gpu, input=[A],
inout=[B])``, made by parla._core in one call (placement and declarations read in C). Python path: the same
spawn given to parla.tasks._spawn, the general spawn (every argument checked in Python, the declarations read
by parla.array._engine_accesses, as every spawn was before the C path; it ends in the same Task._submit).
Prints µs per task (spawn, run and wait, 2 workers, context start and exit included) for independent named
tasks, a chain, and independent tasks placed on a (virtual) GPU with two PArray declarations each (64 pairs
of 8-element arrays, used in turn), medians of --reps runs, and the ratio Python / C.

For a count of instructions (which the load of a shared machine does not move), ``--gated c`` or
``--gated python`` spawns --tasks tasks of the last kind, each after a gate task spawned only at the end,
making each spawn through ``operator.call`` so that callgrind can count only the spawn calls:

    valgrind --tool=callgrind --toggle-collect=_operator_call --callgrind-out-file=/dev/null \
        .venv/bin/python benchmarks/python/bench_spawn_paths.py --gated c --tasks 2000

(the same with ``--gated python``; "Collected" divided by --tasks is the instructions per spawn).
"""
from __future__ import annotations

import argparse
import operator
import statistics
import time

import numpy as np

from parla import Parla, TaskSpace, spawn
from parla.array import asarray
from parla.devices import gpu
from parla.tasks import _spawn as general_spawn


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
                @general_spawn(T[i])
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
                @general_spawn(T[i], [T[i - 1]])
                def task() -> None:
                    pass
    return (time.perf_counter() - t0) / n * 1e6


def placed_accesses(n: int, c_path: bool) -> float:
    t0 = time.perf_counter()
    with Parla(n_workers=2, virtual_gpus=1):
        ins = [asarray(np.zeros(8)) for _ in range(64)]
        outs = [asarray(np.zeros(8)) for _ in range(64)]
        T = TaskSpace("T")
        spawner = spawn if c_path else general_spawn
        for i in range(n):
            @spawner(T[i], placement=gpu, input=[ins[i % 64]], inout=[outs[i % 64]])
            def task() -> None:
                pass
    return (time.perf_counter() - t0) / n * 1e6


def gated(n: int, c_path: bool) -> None:
    """Spawns n tasks placed on a GPU with two declarations each, all after a gate spawned last; each spawn
    (the call of spawn and of its decorator) made through operator.call."""
    with Parla(n_workers=1, virtual_gpus=1):
        ins = [asarray(np.zeros(8)) for _ in range(64)]
        outs = [asarray(np.zeros(8)) for _ in range(64)]
        T, G = TaskSpace("T"), TaskSpace("G")
        spawner = spawn if c_path else general_spawn
        gate = [G[0]]

        def task() -> None:
            pass
        for i in range(n):
            decorator = operator.call(spawner, T[i], gate, placement=gpu, input=[ins[i % 64]],
                                      inout=[outs[i % 64]])
            operator.call(decorator, task)
        spawn(G[0])(task)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gated", choices=("c", "python"), help="only the gated spawns, for callgrind (see above)")
    args = ap.parse_args()
    if args.gated:
        gated(args.tasks, args.gated == "c")
        return
    for name, fn in (("independent, named", independent), ("chain", chain),
                     ("gpu + 2 accesses", placed_accesses)):
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
