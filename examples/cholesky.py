"""Tiled Cholesky factorisation (right-looking, lower), the flagship application of the Parla paper.

    python examples/cholesky.py --n 4096 --block 512 --check
    python examples/cholesky.py --n 4096 --block 128 --no-parray        # plain NumPy tiles, explicit deps
    python examples/cholesky.py --n 4096 --block 128 --native --check   # native task bodies (no Python per task)

The n x n matrix is cut into b x b tiles (the last row/column of tiles may be smaller). For each panel k:

    POTRF[k]        A[k,k] := chol(A[k,k])                               (critical path, highest priority)
    TRSM[i,k]       A[i,k] := A[i,k] inv(A[k,k])^T            i > k
    SYRK[i,k]       A[i,i] -= A[i,k] A[i,k]^T                   i > k
    GEMM[i,j,k]     A[i,j] -= A[i,k] A[j,k]^T                   i > j > k

With PArrays (the default) each tile is a PArray and a task declares what it reads (``input=``) and writes
(``inout=``); the runtime derives the ordering from those declarations. With ``--no-parray`` tiles are
plain NumPy arrays and every task lists its dependencies explicitly. Both run the same kernels and give
bit-identical results (the order of the updates to one tile is the same: k = 0, 1, ...).

With ``--native`` every task's body is a native function (``parla.kernels``: SciPy's OpenBLAS routines as
``parla.native`` calls) instead of a Python function: a worker calls the routine directly, without the GIL
and without running any Python, on the tiles' copies on the task's device. It needs PArray tiles and runs on
the CPU (or virtual GPUs: host memory). Same kernels, same order of updates, bit-identical factor.

Priorities (three levels in this runtime): POTRF, the first TRSM of a panel and the SYRK that feeds the
next POTRF run first; the GEMMs feeding the next panel and the other TRSMs next; all other updates last.

The CPU kernels (examples/kernels.py) call SciPy's OpenBLAS through its Cython function pointers and
release the GIL, so tasks run in parallel on the worker threads; OpenBLAS is set to one thread, the
parallelism comes from the tasks. Each kernel is a @specialize function with a gpu variant: CuPy on CUDA GPUs,
the CPU kernel on virtual GPUs (whose memory is host memory).

Prints the relative residual ||L L^T - A||_F / ||A||_F (with --check; asserted < 1e-10) and GFLOP/s, counting
n^3/3 floating-point operations.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernels  # noqa: E402  (examples/kernels.py)

from parla import Parla, TaskSpace, spawn, specialize  # noqa: E402
from parla import kernels as native_kernels  # noqa: E402  (the same kernels as native task bodies)
from parla.array import get_array_module  # noqa: E402
from parla.devices import cpu, gpu  # noqa: E402
from parla.tasks import barrier  # noqa: E402

__all__ = ["factor", "factor_sequential", "run", "run_sequential", "make_spd", "to_tiles", "from_tiles", "residual", "main"]

# --- kernels, one variant per architecture -----------------------------------------------------------------
#
# The default bodies run the GIL-free CPU kernels. The gpu variants serve both kinds of GPU: on a virtual GPU
# the tile is a NumPy array in host memory, so the CPU kernel applies; on a CUDA GPU it is a CuPy array and
# cuBLAS/cuSOLVER do the work on the task's stream.

@specialize
def potrf(a: Any) -> None:
    kernels.potrf(a)


@potrf.variant(gpu)
def potrf_gpu(a: Any) -> None:
    if get_array_module(a) is np:
        kernels.potrf(a)
        return
    import cupy  # pyright: ignore[reportMissingImports]
    a[...] = cupy.linalg.cholesky(a)


@specialize
def trsm(l: Any, b: Any) -> None:
    kernels.trsm(l, b)


@trsm.variant(gpu)
def trsm_gpu(l: Any, b: Any) -> None:
    if get_array_module(b) is np:
        kernels.trsm(l, b)
        return
    from cupyx.scipy.linalg import solve_triangular  # pyright: ignore[reportMissingImports]
    b[...] = solve_triangular(l, b.T, lower=True).T       # b := b inv(l)^T


@specialize
def syrk(a: Any, c: Any) -> None:
    kernels.syrk(a, c)


@syrk.variant(gpu)
def syrk_gpu(a: Any, c: Any) -> None:
    if get_array_module(c) is np:
        kernels.syrk(a, c)
        return
    c -= a @ a.T


@specialize
def gemm(a: Any, b: Any, c: Any) -> None:
    kernels.gemm(a, b, c)


@gemm.variant(gpu)
def gemm_gpu(a: Any, b: Any, c: Any) -> None:
    if get_array_module(c) is np:
        kernels.gemm(a, b, c)
        return
    c -= a @ b.T


# --- matrices and tiles -------------------------------------------------------------------------------------

def make_spd(n: int, seed: int = 0) -> np.ndarray:
    """A random symmetric positive definite n x n matrix: (R + R^T)/2 + n I with R uniform in [0, 1)
    (strictly diagonally dominant, hence SPD, and cheap to make for large n)."""
    rng = np.random.default_rng(seed)
    a = rng.random((n, n))
    a += a.T
    a *= 0.5
    a[np.diag_indices(n)] += n
    return a


def spd_tile(n: int, block: int, i: int, j: int, seed: int = 0) -> np.ndarray:
    """Tile (i, j), i >= j, of an n x n SPD matrix made tile by tile (so that each MPI rank makes only its own
    tiles): off-diagonal tiles uniform in [0, 1) from a generator seeded with (seed, i, j), diagonal tiles
    (R + R^T)/2 + n I. Every row has at most n - 1 off-diagonal entries below 1, so the matrix is strictly
    diagonally dominant, hence SPD. :func:`spd_from_tiles` assembles the whole matrix."""
    e = _bounds(n, block)
    rng = np.random.default_rng([seed, i, j])
    t = rng.random((e[i + 1] - e[i], e[j + 1] - e[j]))
    if i == j:
        t += t.T
        t *= 0.5
        t[np.diag_indices(t.shape[0])] += n
    return t


def spd_from_tiles(n: int, block: int, seed: int = 0) -> np.ndarray:
    """The whole matrix of :func:`spd_tile` (both triangles)."""
    e = _bounds(n, block)
    a = np.empty((n, n))
    for i in range(len(e) - 1):
        for j in range(i + 1):
            t = spd_tile(n, block, i, j, seed)
            a[e[i]:e[i + 1], e[j]:e[j + 1]] = t
            a[e[j]:e[j + 1], e[i]:e[i + 1]] = t.T
    return a


def _bounds(n: int, block: int) -> List[int]:
    return list(range(0, n, block)) + [n]


def to_tiles(a: np.ndarray, block: int) -> List[List[Optional[np.ndarray]]]:
    """The lower triangle of ``a`` as a list of lists of C-contiguous tiles (None above the diagonal)."""
    e = _bounds(a.shape[0], block)
    nt = len(e) - 1
    return [[np.ascontiguousarray(a[e[i]:e[i + 1], e[j]:e[j + 1]]) if j <= i else None for j in range(nt)]
            for i in range(nt)]


def from_tiles(tiles: Sequence[Sequence[Optional[np.ndarray]]], n: int) -> np.ndarray:
    """Assembles the lower-triangular factor from tiles (the strict upper triangle is zero)."""
    out = np.zeros((n, n))
    row = 0
    for i, tile_row in enumerate(tiles):
        col = 0
        for j in range(i + 1):
            t = tile_row[j]
            assert t is not None  # the lower triangle is filled
            out[row:row + t.shape[0], col:col + t.shape[1]] = np.tril(t) if i == j else t
            col += t.shape[1]
        first = tile_row[0]
        assert first is not None
        row += first.shape[0]
    return out


def residual(a: np.ndarray, l: np.ndarray) -> float:
    """||L L^T - A||_F / ||A||_F (uses every core's BLAS threads, then sets them back to one)."""
    kernels.set_blas_threads(os.cpu_count() or 1)
    try:
        r = l @ l.T
        r -= a
        return float(np.linalg.norm(r) / np.linalg.norm(a))
    finally:
        kernels.set_blas_threads(1)


# --- the task graph -----------------------------------------------------------------------------------------

def _priorities(i: int, j: int, k: int) -> int:
    """Priority of the task at step k that writes tile (i, j) (POTRF: i == j == k; TRSM: j == k)."""
    if i == j == k:
        return 1                                   # POTRF
    if j == k:
        return 1 if i == k + 1 else 0              # TRSM: the one the next POTRF's panel starts with first
    if j == k + 1:
        return 1 if i == j else 0                  # updates feeding the next panel (look-ahead)
    return -1                                      # the rest of the trailing matrix


def factor(tiles: List[List[Any]], use_parray: bool = True, placement: Any = cpu, explicit_deps: Optional[bool] = None,
           priorities: bool = True, spawn: Callable[..., Callable[[Any], Any]] = spawn,
           native: bool = False) -> Tuple[TaskSpace, TaskSpace, TaskSpace, TaskSpace]:
    """Spawns the tiled Cholesky task graph on ``tiles`` (lower tiles, from :func:`to_tiles`, or PArrays made
    from them) inside the active Parla context; the factor overwrites the tiles. Returns after spawning, with
    the TaskSpaces (POTRF, TRSM, SYRK, GEMM); leaving the Parla context waits for the tasks. ``POTRF[nt - 1]``
    (nt tiles per side) depends, through the tiles, on every other task: waiting for it waits for them all.

    ``explicit_deps`` (default: not use_parray) adds the dependency edges by hand; with PArrays the runtime
    derives them from input/inout. ``priorities=False`` spawns every task at the default priority. ``spawn``:
    the spawn to use (``parla.mpi.spawn`` with DistArray tiles runs the same graph on several MPI ranks).
    ``native``: every body is a native call of :mod:`parla.kernels` (PArray tiles only; ValueError otherwise)."""
    nt = len(tiles)
    if native and not use_parray:
        raise ValueError("factor(native=True): native task bodies need PArray tiles (use_parray=True)")
    if explicit_deps is None:
        explicit_deps = not use_parray
    POTRF = TaskSpace("POTRF", shape=(nt,))
    TRSM = TaskSpace("TRSM", shape=(nt, nt))
    SYRK = TaskSpace("SYRK", shape=(nt, nt))
    GEMM = TaskSpace("GEMM", shape=(nt, nt, nt))

    def last_update(i: int, j: int, k: int) -> Any:
        """The task that last wrote tile (i, j) before step k (empty at k == 0)."""
        if k == 0:
            return []
        return SYRK[i, k - 1] if i == j else GEMM[i, j, k - 1]

    # The levels of _priorities, written out per kind of task (two Python calls per task fewer while spawning);
    # test_cholesky_example checks them against _priorities.
    hi, mid, lo = (1, 0, -1) if priorities else (0, 0, 0)
    k_potrf, k_trsm, k_syrk, k_gemm = native_kernels.potrf, native_kernels.trsm, native_kernels.syrk, native_kernels.gemm

    if use_parray:
        def data(t: Any) -> Any:
            return t.array
    else:
        def data(t: Any) -> Any:
            return t

    for k in range(nt):
        akk = tiles[k][k]

        task = spawn(POTRF[k], [last_update(k, k, k)] if explicit_deps else [], placement=placement,
                     inout=[akk] if use_parray else [], priority=hi)
        if native:
            task(k_potrf(akk))
        else:
            @task
            def potrf_task(akk: Any = akk) -> None:
                potrf(data(akk))

        for i in range(k + 1, nt):
            aik = tiles[i][k]

            task = spawn(TRSM[i, k], [POTRF[k], last_update(i, k, k)] if explicit_deps else [], placement=placement,
                         input=[akk] if use_parray else [], inout=[aik] if use_parray else [],
                         priority=hi if i == k + 1 else mid)
            if native:
                task(k_trsm(akk, aik))
            else:
                @task
                def trsm_task(akk: Any = akk, aik: Any = aik) -> None:
                    trsm(data(akk), data(aik))

        for i in range(k + 1, nt):
            aik = tiles[i][k]
            aii = tiles[i][i]

            task = spawn(SYRK[i, k], [TRSM[i, k], last_update(i, i, k)] if explicit_deps else [], placement=placement,
                         input=[aik] if use_parray else [], inout=[aii] if use_parray else [],
                         priority=hi if i == k + 1 else lo)
            if native:
                task(k_syrk(aik, aii))
            else:
                @task
                def syrk_task(aik: Any = aik, aii: Any = aii) -> None:
                    syrk(data(aik), data(aii))

            for j in range(k + 1, i):
                ajk = tiles[j][k]
                aij = tiles[i][j]

                task = spawn(GEMM[i, j, k], [TRSM[i, k], TRSM[j, k], last_update(i, j, k)] if explicit_deps else [],
                             placement=placement, input=[aik, ajk] if use_parray else [],
                             inout=[aij] if use_parray else [], priority=mid if j == k + 1 else lo)
                if native:
                    task(k_gemm(aik, ajk, aij))
                else:
                    @task
                    def gemm_task(aik: Any = aik, ajk: Any = ajk, aij: Any = aij) -> None:
                        gemm(data(aik), data(ajk), data(aij))
    return POTRF, TRSM, SYRK, GEMM


def factor_sequential(tiles: List[List[Any]]) -> None:
    """The same kernels in the same program order on the calling thread, without the runtime: the
    reference for measuring the runtime's overhead per task (compare with ``--workers 1``)."""
    nt = len(tiles)
    for k in range(nt):
        akk = tiles[k][k]
        kernels.potrf(akk)
        for i in range(k + 1, nt):
            kernels.trsm(akk, tiles[i][k])
        for i in range(k + 1, nt):
            kernels.syrk(tiles[i][k], tiles[i][i])
            for j in range(k + 1, i):
                kernels.gemm(tiles[i][k], tiles[j][k], tiles[i][j])


def run_sequential(a: np.ndarray, block: int) -> Tuple[np.ndarray, float]:
    """Factors ``a`` with :func:`factor_sequential` (one BLAS thread); returns (L, seconds)."""
    kernels.set_blas_threads(1)
    tiles = to_tiles(a, block)
    t0 = time.perf_counter()
    factor_sequential(tiles)
    seconds = time.perf_counter() - t0
    return from_tiles(tiles, a.shape[0]), seconds


def count_tasks(nt: int) -> int:
    """Number of tasks for nt x nt tiles: nt POTRF, nt(nt-1)/2 TRSM and SYRK, nt(nt-1)(nt-2)/6 GEMM."""
    return nt + nt * (nt - 1) + nt * (nt - 1) * (nt - 2) // 6


def run(a: np.ndarray, block: int, workers: Optional[int] = None, use_parray: bool = True, virtual_gpus: int = 0,
        trace: Optional[str] = None, priorities: bool = True, explicit_deps: Optional[bool] = None,
        graph: Optional[str] = None, summary: bool = False, all_devices: bool = False,
        native: bool = False, context_options: Optional[Dict[str, Any]] = None,
        include_exit: bool = False) -> Tuple[np.ndarray, float]:
    """Factors ``a`` (not modified) with tiles of ``block``; returns (L as a full lower-triangular array,
    seconds). ``native``: native task bodies (:mod:`parla.kernels`; PArray tiles). ``context_options``: more
    keywords for ``Parla()`` (e.g. ``{"switch_interval": None}``). The time covers spawning and running the
    tasks, from the first spawn to the end of the last task (waited for inside the ``with Parla()`` block), as
    StarPU's C Cholesky times submitting and ``starpu_task_wait_for_all``; not the conversion to and from
    tiles, the start of the worker threads, nor the context's exit (bringing every tile home and stopping the
    workers, as StarPU's ``starpu_data_unregister`` and ``starpu_shutdown`` are not timed there).
    ``include_exit=True`` times the exit too."""
    kernels.set_blas_threads(1)
    n = a.shape[0]
    tiles = to_tiles(a, block)
    options: Dict[str, Any] = {}
    if virtual_gpus:
        options["virtual_gpus"] = virtual_gpus
    if trace:
        options["trace"] = trace
    if graph:
        options["graph"] = graph
    if summary:
        options["summary"] = True
    options.update(context_options or {})
    placement = [cpu, gpu] if (virtual_gpus or all_devices) else cpu
    if use_parray:
        from parla.array import asarray
        parrays: List[List[Any]] = [[asarray(t) if t is not None else None for t in row] for row in tiles]
    else:
        parrays = tiles
    ctx = Parla(n_workers=workers, **options)
    seconds = 0.0
    with ctx:
        t0 = time.perf_counter()
        potrf_tasks = factor(parrays, use_parray=use_parray, placement=placement, explicit_deps=explicit_deps,
                             priorities=priorities, native=native)[0]
        if not include_exit:
            barrier(potrf_tasks[len(parrays) - 1])  # the last task: every other one precedes it
            seconds = time.perf_counter() - t0
    if include_exit:
        seconds = time.perf_counter() - t0  # leaving the block waited for every task
    if use_parray:
        # Bring every tile's valid copy back to the host arrays.
        tiles = [[np.asarray(p.array) if p is not None else None for p in row] for row in parrays]
    return from_tiles(tiles, n), seconds


def distributed_tiles(n: int, block: int, seed: int = 0) -> List[List[Any]]:
    """The lower triangle of the n x n SPD matrix of :func:`spd_tile` as ``parla.mpi.DistArray`` tiles (None
    above the diagonal), laid out 2-D block-cyclically over the most square P x Q grid of MPI_COMM_WORLD
    (tile (i, j) on rank (i % P) * Q + j % Q); each tile is made by its owner only. Collective."""
    from parla import mpi
    e = _bounds(n, block)
    nt = len(e) - 1
    owner = mpi.BlockCyclic(*mpi.process_grid(mpi.size()))
    return [[mpi.DistArray(lambda i=i, j=j: spd_tile(n, block, i, j, seed), owner=owner(i, j),
                           shape=(e[i + 1] - e[i], e[j + 1] - e[j]), dtype=np.float64, name=f"A[{i},{j}]")
             if j <= i else None for j in range(nt)] for i in range(nt)]


def run_mpi(n: int, block: int, workers: Optional[int] = None, check: bool = False, seed: int = 0,
            trace: Optional[str] = None) -> Dict[str, Any]:
    """The same factorisation on every rank of MPI_COMM_WORLD (run under ``mpirun -n P``): the tiles are
    DistArrays laid out 2-D block-cyclically over the most square P x Q grid (tile (i, j) on rank
    (i % P) * Q + j % Q), each made by its owner with :func:`spd_tile`, and :func:`factor` runs with
    ``parla.mpi.spawn`` (every task on the owner of the tile it writes). Collective. Returns, on every rank,
    ``seconds`` (the factorisation: entering to leaving the distributed context, which waits for every rank)
    and this rank's message counts; with ``check``, rank 0 gathers the factor and adds ``residual``."""
    from parla import mpi
    kernels.set_blas_threads(1)
    grid = mpi.process_grid(mpi.size())
    tiles = distributed_tiles(n, block, seed)
    ctx = mpi.Parla(n_workers=workers, trace=trace)
    mpi.world().Barrier()
    t0 = time.perf_counter()
    with ctx:
        factor(tiles, spawn=mpi.spawn)
    seconds = time.perf_counter() - t0
    result = dict(ctx.stats, seconds=seconds, grid=grid)
    if check:
        with mpi.Parla(n_workers=workers):
            mpi.fetch(tiles, rank=0)
        if mpi.rank() == 0:
            l = from_tiles([[t.numpy() if t is not None else None for t in row] for row in tiles], n)
            result["residual"] = residual(spd_from_tiles(n, block, seed), l)
    return result


def gflops(n: int, seconds: float) -> float:
    return n ** 3 / 3.0 / seconds / 1e9


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096, help="matrix order (default 4096)")
    parser.add_argument("--block", type=int, default=512, help="tile size (default 512)")
    parser.add_argument("--workers", type=int, default=None, help="worker threads (default: all cores)")
    parser.add_argument("--virtual-gpus", type=int, default=0, help="add N virtual GPUs (placement [cpu, gpu])")
    parser.add_argument("--trace", default=None, help="write a Chrome trace (JSON) to this file")
    parser.add_argument("--check", action="store_true", help="compute and assert the relative residual")
    parser.add_argument("--no-parray", action="store_true", help="plain NumPy tiles with explicit dependencies")
    parser.add_argument("--explicit-deps", action="store_true", help="with PArrays, also list dependencies")
    parser.add_argument("--native", action="store_true",
                        help="native task bodies (parla.kernels: OpenBLAS called without the GIL); PArray tiles")
    parser.add_argument("--no-priorities", action="store_true", help="spawn every task at the default priority")
    parser.add_argument("--repeat", type=int, default=1, help="factor this many times, report each and the median")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mpi", action="store_true",
                        help="run on every rank of mpirun -n P (DistArray tiles, 2-D block-cyclic); see docs/multi-node.md")
    args = parser.parse_args(argv)
    if args.n <= 0 or args.block <= 0:
        parser.error("--n and --block must be positive")
    if args.native and (args.no_parray or args.mpi):
        parser.error("--native needs PArray tiles on one node (not with --no-parray or --mpi)")
    if args.mpi:
        return _main_mpi(args)

    a = make_spd(args.n, args.seed)
    nt = -(-args.n // args.block)
    mode = "NumPy tiles, explicit dependencies" if args.no_parray else \
        "PArray tiles, native bodies" if args.native else "PArray tiles"
    print(f"Cholesky n={args.n} block={args.block}: {nt}x{nt} tiles, {count_tasks(nt)} tasks, {mode}, "
          f"workers={args.workers or os.cpu_count()}" + (f", {args.virtual_gpus} virtual GPUs" if args.virtual_gpus else ""))
    times = []
    l = None
    for r in range(args.repeat):
        l, seconds = run(a, args.block, args.workers, use_parray=not args.no_parray, virtual_gpus=args.virtual_gpus,
                         trace=args.trace if r == args.repeat - 1 else None, priorities=not args.no_priorities,
                         explicit_deps=True if args.explicit_deps else None, native=args.native)
        times.append(seconds)
        print(f"  run {r + 1}: {seconds:.3f} s, {gflops(args.n, seconds):.1f} GFLOP/s")
    median = float(np.median(times))
    result = {"n": args.n, "block": args.block, "seconds": median, "gflops": gflops(args.n, median), "times": times}
    print(f"time {median:.3f} s (median of {len(times)}), {result['gflops']:.1f} GFLOP/s (n^3/3 flops)")
    if args.check:
        assert l is not None  # --repeat is at least 1
        res = residual(a, l)
        result["residual"] = res
        print(f"relative residual ||L L^T - A||_F / ||A||_F = {res:.3e}")
        assert res < 1e-10, f"residual {res:.3e} is too large"
    if args.trace:
        print(f"trace: {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    return result


def _main_mpi(args: argparse.Namespace) -> Dict[str, Any]:
    from parla import mpi
    nt = -(-args.n // args.block)
    if mpi.rank() == 0:
        print(f"Cholesky n={args.n} block={args.block}: {nt}x{nt} tiles, {count_tasks(nt)} tasks, {mpi.size()} MPI "
              f"ranks (grid {mpi.process_grid(mpi.size())}), 2-D block-cyclic DistArray tiles", flush=True)
    result = {}
    for r in range(args.repeat):
        result = run_mpi(args.n, args.block, args.workers, check=args.check and r == args.repeat - 1,
                         seed=args.seed, trace=args.trace if r == args.repeat - 1 else None)
        if mpi.rank() == 0:
            print(f"  run {r + 1}: {result['seconds']:.3f} s, {gflops(args.n, result['seconds']):.1f} GFLOP/s", flush=True)
    print(f"  rank {mpi.rank()}: {result['tasks_run']} tasks, {result['messages_sent']} messages sent "
          f"({result['bytes_sent'] / 2**20:.1f} MiB), {result['messages_received']} received", flush=True)
    if "residual" in result:
        res = result["residual"]
        print(f"relative residual ||L L^T - A||_F / ||A||_F = {res:.3e}", flush=True)
        assert res < 1e-10, f"residual {res:.3e} is too large"
    return result


if __name__ == "__main__":
    main()
