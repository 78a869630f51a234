"""Distributed tiled Cholesky: parla.mpi against ScaLAPACK's pdpotrf and against Dask distributed, in one run.

    python benchmarks/mpi/bench_cholesky_mpi.py                      # n=8192, block 512, on 2 and 4 ranks
    python benchmarks/mpi/bench_cholesky_mpi.py --n 4096 --ranks 2   # a quick run
    python benchmarks/mpi/bench_cholesky_mpi.py --model 64           # message model only, 64 ranks (8 x 8)

For each number of ranks P (``--ranks``), with the same n, block and P x Q grid (``parla.mpi.process_grid``):

- **parla.mpi**: ``mpirun -n P python examples/cholesky.py``'s distributed factorisation (``run_mpi``: DistArray
  tiles 2-D block-cyclic, one compute worker per rank, OpenBLAS on one thread), timed from entering to
  leaving the distributed context (every rank finished);
- **ScaLAPACK**: ``pdpotrf`` (lower) from Debian's ScaLAPACK for OpenMPI with OpenBLAS on one thread, through
  the C driver ``benchmarks/mpi/pdpotrf.c`` (built here with mpicc), on the same grid and block, and on the
  transposed grid (Q x P) too, since pdpotrf prefers one of them;
- **Dask distributed**: ``dask.array.linalg.cholesky`` on a ``LocalCluster`` of P worker processes with one
  thread each, chunks of the block size, the matrix persisted in the workers first, so only the
  factorisation is timed;
- **bytes sent per rank** by parla.mpi (the communication engine's counters) against the 2-D block-cyclic
  minimum for tile-granular Cholesky: each tile version (a factored diagonal tile, a panel tile after its
  TRSM) sent once to every other rank owning a tile that reads it (:func:`minimum_messages`).

It prints the times, GFLOP/s (n^3/3 flops) and the ratios (ScaLAPACK time / parla.mpi time: >= 0.9 means at
least 0.9x ScaLAPACK's speed; Dask time / parla.mpi time), and writes them to build/bench-mpi/results.json.
On a machine with fewer cores than ranks the runs share the cores: compare ratios, not absolute speeds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, "build", "bench-mpi")
DRIVER_SRC = os.path.join(REPO, "benchmarks", "mpi", "pdpotrf.c")
DRIVER = os.path.join(BUILD, "pdpotrf")


def process_grid(size: int) -> Tuple[int, int]:
    import math
    p = int(math.isqrt(size))
    while size % p:
        p -= 1
    return p, size // p


def minimum_messages(n: int, block: int, P: int, Q: int) -> Dict[int, Dict[str, int]]:
    """Per rank: ``messages`` and ``bytes`` it must send in a tile-granular right-looking Cholesky on the
    row-major P x Q block-cyclic grid when each tile version goes once to each other rank that reads it.
    Readers of the factored A[k,k]: the TRSMs A[i,k], i > k. Readers of panel tile A[i,k] (i > k): SYRK on
    A[i,i], GEMMs on A[i,j] (k < j < i) and on A[m,i] (m > i)."""
    e = list(range(0, n, block)) + [n]
    nt = len(e) - 1
    size = lambda i: e[i + 1] - e[i]
    owner = lambda i, j: (i % P) * Q + (j % Q)
    out = {r: {"messages": 0, "bytes": 0} for r in range(P * Q)}

    def send(src: int, readers: set, nbytes: int) -> None:
        readers.discard(src)
        out[src]["messages"] += len(readers)
        out[src]["bytes"] += len(readers) * nbytes

    for k in range(nt):
        send(owner(k, k), {owner(i, k) for i in range(k + 1, nt)}, size(k) * size(k) * 8)
        for i in range(k + 1, nt):
            readers = {owner(i, i)} | {owner(i, j) for j in range(k + 1, i)} | \
                {owner(m, i) for m in range(i + 1, nt)}
            send(owner(i, k), readers, size(i) * size(k) * 8)
    return out


def _mpi_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PARLA_TRACE", None)
    return env


def _mpirun(n_ranks: int, args: List[str], timeout: float) -> str:
    # Idle MPI waits yield the core (ScaLAPACK's blocking broadcasts would otherwise spin on cores the other
    # ranks need when ranks outnumber cores); the same setting for both MPI peers.
    cmd = ["mpirun", "-n", str(n_ranks), "--oversubscribe", "--mca", "mpi_yield_when_idle", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_mpi_env(), cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


# --- parla.mpi ----------------------------------------------------------------------------------------------

def _ours_rank(n: int, block: int, seed: int) -> None:
    """Runs under mpirun: one distributed factorisation; rank 0 prints RESULT with every rank's counts."""
    sys.path.insert(0, os.path.join(REPO, "examples"))
    import cholesky
    from parla import mpi
    result = cholesky.run_mpi(n, block, workers=1, seed=seed)
    every = mpi.world().gather({k: result[k] for k in ("rank", "tasks_run", "messages_sent", "bytes_sent",
                                                      "messages_received", "bytes_received")}, root=0)
    if mpi.rank() == 0:
        print("RESULT " + json.dumps({"seconds": result["seconds"], "grid": result["grid"], "ranks": every}), flush=True)


def run_ours(n: int, block: int, n_ranks: int, timeout: float) -> Dict[str, Any]:
    out = _mpirun(n_ranks, [sys.executable, os.path.abspath(__file__), "--_ours", str(n), str(block)], timeout)
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if m is None:
        raise RuntimeError(f"no result from the parla.mpi run:\n{out[-2000:]}")
    return json.loads(m.group(1))


# --- ScaLAPACK ----------------------------------------------------------------------------------------------

def build_driver() -> Optional[str]:
    """Builds the pdpotrf driver with mpicc (once); returns None, or why it cannot be built."""
    if os.path.exists(DRIVER) and os.path.getmtime(DRIVER) >= os.path.getmtime(DRIVER_SRC):
        return None
    if shutil.which("mpicc") is None:
        return "mpicc not found (Debian: libopenmpi-dev)"
    os.makedirs(BUILD, exist_ok=True)
    # Debian's libscalapack-openmpi links BLAS and LAPACK (libblas.so.3, liblapack.so.3: OpenBLAS when
    # libopenblas0-pthread is installed).
    proc = subprocess.run(["mpicc", "-O2", "-Wall", "-o", DRIVER, DRIVER_SRC, "-lscalapack-openmpi", "-lm"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return f"the pdpotrf driver did not build (Debian: libscalapack-openmpi-dev):\n{proc.stderr[-1500:]}"
    return None


def run_scalapack(n: int, block: int, P: int, Q: int, timeout: float) -> Dict[str, Any]:
    out = _mpirun(P * Q, [DRIVER, str(n), str(block), str(P), str(Q)], timeout)
    m = re.search(r"seconds=([0-9.]+) gflops=([0-9.]+) info=(-?\d+)", out)
    if m is None or int(m.group(3)) != 0:
        raise RuntimeError(f"pdpotrf failed:\n{out}")
    return {"seconds": float(m.group(1)), "grid": [P, Q]}


# --- Dask distributed -----------------------------------------------------------------------------------------

def _dask_tile(block_info: Any = None, n: int = 0, block: int = 0, seed: int = 0) -> np.ndarray:
    """Tile (i, j) of the benchmark's SPD matrix (examples/cholesky.py's spd_tile, both triangles); runs in
    the Dask workers."""
    sys.path.insert(0, os.path.join(REPO, "examples"))
    import cholesky
    (i0, _), (j0, _) = block_info[None]["array-location"]
    i, j = i0 // block, j0 // block
    if i >= j:
        return cholesky.spd_tile(n, block, i, j, seed)
    return cholesky.spd_tile(n, block, j, i, seed).T.copy()


def run_dask(n: int, block: int, workers: int, seed: int = 0) -> Dict[str, Any]:
    import dask.array as da
    from dask.distributed import Client, LocalCluster, wait
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster):
        chunks = ((block,) * (n // block) + ((n % block,) if n % block else ()),) * 2
        a = da.map_blocks(_dask_tile, dtype=np.float64, chunks=chunks, n=n, block=block, seed=seed).persist()
        wait(a)
        t0 = time.perf_counter()
        lower = da.linalg.cholesky(a, lower=True).persist()
        wait(lower)
        seconds = time.perf_counter() - t0
        # A cheap check of the result: the first column of L L^T is the first column of A.
        col = (lower @ lower[0, :].T).compute()
        expected = a[:, 0].compute()
    if not np.allclose(col, expected, rtol=1e-10, atol=1e-8):
        raise RuntimeError("Dask's factor does not reproduce A's first column")
    return {"seconds": seconds, "workers": workers}


# --- report -------------------------------------------------------------------------------------------------

def gflops(n: int, seconds: float) -> float:
    return n ** 3 / 3.0 / seconds / 1e9


def model(n: int, block: int, size: int) -> Dict[str, Any]:
    P, Q = process_grid(size)
    per = minimum_messages(n, block, P, Q)
    msgs = [v["messages"] for v in per.values()]
    vol = [v["bytes"] for v in per.values()]
    return {"ranks": size, "grid": [P, Q], "n": n, "block": block, "messages_per_rank_mean": sum(msgs) / size,
            "messages_per_rank_max": max(msgs), "MiB_per_rank_mean": sum(vol) / size / 2 ** 20,
            "MiB_per_rank_max": max(vol) / 2 ** 20}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask peer")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run before giving up")
    parser.add_argument("--model", type=int, nargs="*", default=None,
                        help="print the message model for these numbers of ranks and exit")
    parser.add_argument("--_ours", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._ours:
        _ours_rank(args._ours[0], args._ours[1], 0)
        return 0
    if args.model is not None:
        for size in args.model or [64]:
            for n in sorted({args.n, 8 * args.n}):
                print(json.dumps(model(n, args.block, size)))
        return 0
    if shutil.which("mpirun") is None:
        print("bench_cholesky_mpi: mpirun not found (Debian: openmpi-bin): skipped")
        return 0
    try:
        import mpi4py  # noqa: F401
        import parla._core  # noqa: F401  (an editable install rebuilds here once, not in every rank)
    except ImportError as e:
        print(f"bench_cholesky_mpi: {e}: skipped")
        return 0
    why = build_driver()
    if why:
        print(f"bench_cholesky_mpi: ScaLAPACK peer unavailable: {why}")
    cores = len(os.sched_getaffinity(0))
    print(f"distributed Cholesky n={args.n} block={args.block}, {cores} cores on this machine "
          f"(runs with more ranks than cores share them)", flush=True)
    results: List[Dict[str, Any]] = []
    for size in args.ranks:
        P, Q = process_grid(size)
        row: Dict[str, Any] = {"ranks": size, "grid": [P, Q], "n": args.n, "block": args.block}
        ours = run_ours(args.n, args.block, size, args.timeout)
        row["parla_mpi_s"] = ours["seconds"]
        minimum = minimum_messages(args.n, args.block, P, Q)
        row["bytes_sent"] = {r["rank"]: r["bytes_sent"] for r in ours["ranks"]}
        row["messages_sent"] = {r["rank"]: r["messages_sent"] for r in ours["ranks"]}
        row["bytes_minimum"] = {r: v["bytes"] for r, v in minimum.items()}
        ratios = [row["bytes_sent"][r] / v["bytes"] for r, v in minimum.items() if v["bytes"]]
        row["bytes_ratio_max"] = max(ratios) if ratios else 1.0
        row["bytes_ratio_total"] = sum(row["bytes_sent"].values()) / max(1, sum(row["bytes_minimum"].values()))
        print(f"  P={size} grid {P}x{Q}: parla.mpi {ours['seconds']:.2f} s ({gflops(args.n, ours['seconds']):.1f} GFLOP/s); "
              f"bytes sent per rank / minimum: max {row['bytes_ratio_max']:.3f}, total {row['bytes_ratio_total']:.3f} "
              f"({', '.join(f'rank {r}: {b / 2**20:.0f} MiB' for r, b in sorted(row['bytes_sent'].items()))})",
              flush=True)
        if not why:
            sl = run_scalapack(args.n, args.block, P, Q, args.timeout)
            row["scalapack_s"] = sl["seconds"]
            row["vs_scalapack"] = sl["seconds"] / ours["seconds"]
            line = (f"  P={size}: ScaLAPACK pdpotrf {sl['seconds']:.2f} s ({gflops(args.n, sl['seconds']):.1f} GFLOP/s) "
                    f"on {P}x{Q}: parla.mpi at {row['vs_scalapack']:.2f}x ScaLAPACK's speed")
            if P != Q:
                other = run_scalapack(args.n, args.block, Q, P, args.timeout)
                row["scalapack_transposed_s"] = other["seconds"]
                row["vs_scalapack_best"] = min(sl["seconds"], other["seconds"]) / ours["seconds"]
                line += (f"; on {Q}x{P} {other['seconds']:.2f} s, parla.mpi at {row['vs_scalapack_best']:.2f}x "
                         f"the better grid")
            print(line, flush=True)
        if not args.no_dask:
            try:
                dk = run_dask(args.n, args.block, size)
            except ImportError as e:
                print(f"  Dask distributed unavailable ({e}): skipped")
            else:
                row["dask_s"] = dk["seconds"]
                row["vs_dask"] = dk["seconds"] / ours["seconds"]
                print(f"  P={size}: Dask distributed {dk['seconds']:.2f} s ({gflops(args.n, dk['seconds']):.1f} GFLOP/s, "
                      f"{size} worker processes): parla.mpi {row['vs_dask']:.2f}x faster", flush=True)
        results.append(row)
    os.makedirs(BUILD, exist_ok=True)
    with open(os.path.join(BUILD, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"results: {os.path.join(BUILD, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
