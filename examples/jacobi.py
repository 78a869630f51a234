"""2-D Jacobi relaxation on an N x N grid, split into row partitions that exchange halo rows.

    python examples/jacobi.py --n 512 --partitions 4 --iterations 50
    python examples/jacobi.py --virtual-gpus 2 --placement any --trace jacobi.json
    python examples/jacobi.py --replay        # iteration 0 captured as a graph, the others replayed

The outer ring of the grid (first/last row and column) is a fixed boundary. The interior rows are cut into
``--partitions`` contiguous bands. Band p is one PArray holding its own rows plus one extra row above and
below (the *halo*): a copy of the neighbouring band's edge row, or the fixed boundary row at the grid's top
and bottom. Each iteration spawns, per band:

    sweep[t, p]      one Jacobi step on the band's own rows, reading the halos     (inout = the band)
    halo[t, p]       refresh the band's halo rows from the neighbours' edge rows   (output = the halo views,
                                                                                    input = neighbour edge views)

No task lists a dependency: the runtime orders them from the declared accesses. ``halo[t, p]`` reads the
edge row of band p-1 after ``sweep[t, p-1]`` wrote it, ``sweep[t+1, p-1]`` waits until every halo task has
read that row, and ``sweep[t+1, p]`` waits for its fresh halos. Halo and edge rows are PArray *views* (one
row each), so only those rows move between devices when neighbouring bands live on different devices.

Placement: ``round-robin`` (default) pins band p to the p-th device of [cpu(0), gpu(0), gpu(1), ...];
``any`` lets the runtime choose among cpu and gpu for every task (placement=[cpu, gpu]).

With ``--replay`` the first iteration's tasks are recorded (``with parla.capture("jacobi") as step:``) and
``step.replay()`` spawns each later iteration in one call into the C engine. Replays are ordered by the
same declared accesses, so iteration t + 1 overlaps iteration t exactly as much as the spawned version does,
and the result is the same to the last bit.

The result is compared against the same number of plain NumPy Jacobi steps on the whole grid. Both evaluate
the same expression in the same order, so they should agree to the last bit; the check allows 1e-12.
Exits with status 1 when they differ.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from parla import Parla, TaskSpace, capture, get_current_devices, spawn
from parla.array import asarray
from parla.devices import cpu, get_all_devices, gpu

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_runtime_options, parla_options  # noqa: E402  (examples/common.py)


def make_grid(n: int, seed: int = 0) -> np.ndarray:
    """An n x n grid: random interior in [0, 1), boundary rows/columns at fixed, distinct values."""
    rng = np.random.default_rng(seed)
    grid = rng.random((n, n))
    grid[0, :] = 1.0
    grid[-1, :] = -1.0
    grid[:, 0] = 0.5
    grid[:, -1] = -0.5
    return grid


def relax(u: np.ndarray) -> None:
    """One Jacobi step in place on every row of u except its first and last (and every column except the
    first and last). The right-hand side is evaluated completely before the assignment."""
    u[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])


def jacobi_reference(grid: np.ndarray, iterations: int) -> np.ndarray:
    """`iterations` Jacobi steps on the whole grid with NumPy."""
    u = grid.copy()
    for _ in range(iterations):
        relax(u)
    return u


def band_bounds(n: int, partitions: int) -> List[int]:
    """Row bounds of the bands: band p owns rows [bounds[p], bounds[p+1]) of the grid's interior."""
    interior = n - 2
    if not 1 <= partitions <= interior:
        raise ValueError(f"--partitions must be between 1 and n - 2 = {interior}, not {partitions}")
    return [1 + (p * interior) // partitions for p in range(partitions + 1)]


def jacobi_setup(grid: np.ndarray, partitions: int, placement: str = "round-robin") -> Dict[str, Any]:
    """Makes the band PArrays and their halo and edge row views inside the active Parla context. Returns
    them ("bands", "bounds", "sweep" and "halo" TaskSpaces) with "spawn_iteration", a function that spawns
    iteration t's tasks and returns how many it spawned."""
    n = grid.shape[0]
    bounds = band_bounds(n, partitions)
    devices = get_all_devices()
    any_device = [cpu, gpu] if len(devices) > 1 else cpu

    bands, tops, bottoms, firsts, lasts = [], [], [], [], []
    for p in range(partitions):
        lo, hi = bounds[p], bounds[p + 1]
        band = asarray(grid[lo - 1:hi + 1].copy())   # own rows plus one halo row above and below
        rows = hi - lo
        bands.append(band)
        # Views are created once: a task body must use the very objects it declared.
        tops.append(band[0:1])
        bottoms.append(band[rows + 1:rows + 2])
        firsts.append(band[1:2])
        lasts.append(band[rows:rows + 1])

    def where(p: int) -> Any:
        return devices[p % len(devices)] if placement == "round-robin" else any_device

    sweep = TaskSpace("sweep")
    halo = TaskSpace("halo")

    def spawn_iteration(t: int) -> int:
        spawned = 0
        for p in range(partitions):
            band = bands[p]

            @spawn(sweep[t, p], placement=where(p), inout=[band])
            def _sweep() -> str:
                relax(band.array)
                return str(get_current_devices()[0])
            spawned += 1

        for p in range(partitions):
            writes, reads, pairs = [], [], []
            if p > 0:                      # top halo <- last own row of the band above
                writes.append(tops[p]); reads.append(lasts[p - 1]); pairs.append((tops[p], lasts[p - 1]))
            if p < partitions - 1:         # bottom halo <- first own row of the band below
                writes.append(bottoms[p]); reads.append(firsts[p + 1]); pairs.append((bottoms[p], firsts[p + 1]))
            if not pairs:
                continue

            @spawn(halo[t, p], placement=where(p), output=writes, input=reads)
            def _halo() -> None:
                for dst, src in pairs:
                    dst.array[...] = src.array
            spawned += 1
        return spawned

    return {"bands": bands, "bounds": bounds, "sweep": sweep, "halo": halo, "spawn_iteration": spawn_iteration}


def jacobi_parla(grid: np.ndarray, iterations: int, partitions: int, placement: str = "round-robin",
                 replay: bool = False) -> Dict[str, Any]:
    """Runs the partitioned Jacobi inside the active Parla context. Returns the band PArrays (their values
    are final once the context exits), the bounds and the sweep tasks. With ``replay``, the first iteration
    is captured as a graph (parla.capture) and every later one replays it: the same tasks, made by the C
    engine in one call per iteration; the TaskSpaces then hold the first iteration's tasks only."""
    state = jacobi_setup(grid, partitions, placement)
    spawn_iteration = state["spawn_iteration"]
    if replay and iterations > 0:
        # Iteration 0 runs as usual and is recorded; the others replay it (no Python per task at spawn).
        with capture("jacobi") as step:
            spawn_iteration(0)
        for _ in range(1, iterations):
            step.replay()
    else:
        for t in range(iterations):
            spawn_iteration(t)
    return state


def assemble(grid: np.ndarray, bands: Sequence[Any], bounds: Sequence[int]) -> np.ndarray:
    """The whole grid: the fixed boundary of `grid` with each band's own rows copied in."""
    out = grid.copy()
    for p, band in enumerate(bands):
        lo, hi = bounds[p], bounds[p + 1]
        out[lo:hi] = np.asarray(band)[1:hi - lo + 1]
    return out


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="grid size N (N x N points, default 512)")
    ap.add_argument("--partitions", type=int, default=4, help="number of row bands (default 4)")
    ap.add_argument("--iterations", type=int, default=50, help="Jacobi steps (default 50)")
    ap.add_argument("--replay", action="store_true",
                    help="capture the first iteration as a graph and replay it for the others (parla.capture)")
    add_runtime_options(ap, ["round-robin", "any"])
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the example. Returns {"ok", "max_error", "seconds", "tasks", "devices", "n", "partitions",
    "iterations"}; "devices" maps each band to the sorted devices its sweeps ran on."""
    args = parse_args(argv)
    grid = make_grid(args.n, args.seed)
    options = parla_options(args)

    start = time.perf_counter()
    with Parla(n_workers=args.workers, **options):
        state = jacobi_parla(grid, args.iterations, args.partitions, args.placement, args.replay)
    seconds = time.perf_counter() - start

    result = assemble(grid, state["bands"], state["bounds"])
    expected = jacobi_reference(grid, args.iterations)
    max_error = float(np.max(np.abs(result - expected)))
    ok = bool(np.allclose(result, expected, rtol=0.0, atol=1e-12))
    devices = {p: sorted({task.result for task in state["sweep"] if task.name.endswith(f", {p}]")})
               for p in range(args.partitions)}
    n_tasks = (len(state["sweep"]) + len(state["halo"])) * (args.iterations if args.replay else 1)
    if not args.quiet:
        print(f"jacobi: n={args.n} partitions={args.partitions} iterations={args.iterations} "
              f"virtual_gpus={args.virtual_gpus} placement={args.placement}"
              f"{' (first iteration captured, then replayed)' if args.replay else ''}")
        print(f"  {n_tasks} tasks in {seconds:.3f} s; sweeps per band ran on {devices}")
        print(f"  max |parla - numpy| = {max_error:.3e}  ->  {'OK' if ok else 'MISMATCH'}")
        if args.trace:
            print(f"  trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    return {"ok": ok, "max_error": max_error, "seconds": seconds, "tasks": n_tasks, "devices": devices,
            "n": args.n, "partitions": args.partitions, "iterations": args.iterations}


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
