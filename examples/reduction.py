"""Sum of a large vector with a reduction tree of tasks.

    python examples/reduction.py --n 10000000 --chunks 16
    python examples/reduction.py --mode parray --virtual-gpus 2

The vector is a PArray cut into ``--chunks`` contiguous slices (PArray views). A *leaf* task sums one slice.
The partial sums are then combined pairwise, level by level, ceil(log2(chunks)) levels in all, until one
value is left. Two ways to pass the partial sums up the tree:

- ``--mode await`` (default): leaves return their sum. Each combine task is an ``async def`` task that
  ``await``s its two children and returns the sum of their results; while it waits, its worker runs other
  tasks. The root's result is the total.
- ``--mode parray``: partial sums live in a PArray ``partial`` of one element per leaf. Leaf i writes
  ``partial[i:i+1]`` (``output=``); at level s the task for i adds ``partial[i+2^s]`` (``input=``) into
  ``partial[i]`` (``inout=``). The tree's order comes only from those declarations; the one-element views
  are written on different devices and the runtime keeps the small PArray coherent.

Placement: ``round-robin`` (default) puts leaf i and the combine task that writes slot i on device i mod D of
[cpu(0), gpu(0), ...]; ``any`` gives every task placement=[cpu, gpu].

The total is compared with np.sum (relative difference at most 1e-10; the summation orders differ, so the
last bits may too). Exits with status 1 on a mismatch.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from parla import Parla, TaskSpace, get_current_devices, spawn
from parla.array import asarray
from parla.devices import cpu, get_all_devices, gpu

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_runtime_options, parla_options  # noqa: E402  (examples/common.py)


def chunk_bounds(n: int, chunks: int) -> List[int]:
    """Boundaries of `chunks` near-equal slices of range(n)."""
    if not 1 <= chunks <= n:
        raise ValueError(f"--chunks must be between 1 and n = {n}, not {chunks}")
    return [(i * n) // chunks for i in range(chunks + 1)]


def levels(chunks: int) -> int:
    """Number of combine levels above the leaves: ceil(log2(chunks))."""
    return math.ceil(math.log2(chunks)) if chunks > 1 else 0


def reduce_parla(x: np.ndarray, chunks: int, mode: str = "await", placement: str = "round-robin") -> Dict[str, Any]:
    """Spawns the reduction tree inside the active Parla context. Returns {"total": a callable giving the
    sum once the context has exited, "leaves", "combines"} (TaskSpaces)."""
    X = asarray(x)
    edges = chunk_bounds(len(x), chunks)
    slices = [X[edges[i]:edges[i + 1]] for i in range(chunks)]
    devices = get_all_devices()
    any_device = [cpu, gpu] if len(devices) > 1 else cpu

    def where(i: int) -> Any:
        return devices[i % len(devices)] if placement == "round-robin" else any_device

    leaf = TaskSpace("leaf", shape=chunks)
    combine = TaskSpace("combine")

    if mode == "await":
        for i in range(chunks):
            part = slices[i]

            @spawn(leaf[i], placement=where(i), input=[part])
            def _leaf() -> float:
                return float(np.sum(part.array))

        # nodes[i] is the task holding the sum of leaves i .. i + 2^s - 1 at the current level s.
        nodes: List[Any] = [leaf[i] for i in range(chunks)]
        for s in range(levels(chunks)):
            nxt = []
            for j in range(0, len(nodes), 2):
                if j + 1 == len(nodes):    # odd one out: passes up unchanged
                    nxt.append(nodes[j])
                    continue
                left, right = nodes[j], nodes[j + 1]

                @spawn(combine[s, j])
                async def _combine() -> Any:
                    return (await left) + (await right)

                nxt.append(_combine)
            nodes = nxt
        root = nodes[0]
        return {"total": lambda: root.result, "leaves": leaf, "combines": combine}

    if mode == "parray":
        partial = asarray(np.zeros(chunks))
        slots = [partial[i:i + 1] for i in range(chunks)]
        for i in range(chunks):
            part, slot = slices[i], slots[i]

            @spawn(leaf[i], placement=where(i), input=[part], output=[slot])
            def _leaf() -> str:
                slot.array[0] = np.sum(part.array)
                return str(get_current_devices()[0])

        for s in range(levels(chunks)):
            stride = 1 << s
            for i in range(0, chunks, 2 * stride):
                if i + stride >= chunks:
                    continue
                mine, other = slots[i], slots[i + stride]

                @spawn(combine[s, i], placement=where(i), inout=[mine], input=[other])
                def _combine() -> str:
                    mine.array[0] += other.array[0]
                    return str(get_current_devices()[0])

        return {"total": lambda: float(np.asarray(partial)[0]), "leaves": leaf, "combines": combine}

    raise ValueError(f"unknown mode {mode!r} (await or parray)")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000, help="vector length (default 10,000,000)")
    ap.add_argument("--chunks", type=int, default=16, help="number of leaves (default 16)")
    ap.add_argument("--mode", choices=["await", "parray"], default="await",
                    help="await: async combine tasks await their children; parray: partial sums in a PArray")
    add_runtime_options(ap, ["round-robin", "any"])
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the example. Returns {"ok", "total", "expected", "rel_error", "seconds", "leaves", "combines",
    "levels"}."""
    args = parse_args(argv)
    x = np.random.default_rng(args.seed).random(args.n)
    options = parla_options(args)

    start = time.perf_counter()
    with Parla(n_workers=args.workers, **options):
        state = reduce_parla(x, args.chunks, args.mode, args.placement)
    seconds = time.perf_counter() - start

    total = state["total"]()
    expected = float(np.sum(x))
    rel_error = abs(total - expected) / max(abs(expected), 1e-300)
    ok = rel_error <= 1e-10
    n_leaves, n_combines = len(state["leaves"]), len(state["combines"])
    if not args.quiet:
        print(f"reduction: n={args.n} chunks={args.chunks} mode={args.mode} virtual_gpus={args.virtual_gpus} "
              f"placement={args.placement}")
        print(f"  {n_leaves} leaves + {n_combines} combine tasks in {levels(args.chunks)} levels, {seconds:.3f} s")
        print(f"  sum = {total!r}, np.sum = {expected!r}, relative difference {rel_error:.2e}  ->  "
              f"{'OK' if ok else 'MISMATCH'}")
        if args.trace:
            print(f"  trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    return {"ok": ok, "total": total, "expected": expected, "rel_error": rel_error, "seconds": seconds,
            "leaves": n_leaves, "combines": n_combines, "levels": levels(args.chunks)}


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
