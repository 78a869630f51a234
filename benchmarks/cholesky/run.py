"""Tiled Cholesky, side by side in one run: Parla (examples/cholesky.py), Dask, LAPACK dpotrf and StarPU.

    python benchmarks/cholesky/run.py                              # n=8192/b=512 and n=4096/b=128
    python benchmarks/cholesky/run.py --sizes 4096:512 --repeat 5
    python benchmarks/cholesky/run.py --systems parla,dask --no-parray
    python benchmarks/cholesky/run.py --systems parla,parla-native,starpu,dgemm --repeat 5

Systems: parla (Python task bodies), parla-5ms (the same with Parla(switch_interval=None): CPython's 5 ms
switch interval instead of the context's 100 us), parla-native (native task bodies: parla.kernels,
examples/cholesky.py --native), parla-native-exit (the same, its time including the context's exit), dask,
lapack, starpu, and dgemm: the machine's DGEMM rate on block x block tiles with --workers threads, each calling the same OpenBLAS dgemm (one BLAS thread) in a loop for about a
second, no runtime; its GFLOP/s column is that rate (its "seconds" are n^3/3 over the rate), the ceiling of a
tiled Cholesky.

Every system uses the same OpenBLAS: SciPy's bundled libscipy_openblas, called through SciPy's Cython
function pointers from Python (examples/kernels.py) and opened with dlopen by the StarPU program. Tiled runs
(Parla, Dask, StarPU) use one BLAS thread per task and ``--workers`` workers (default: all cores); LAPACK
dpotrf uses ``--workers`` BLAS threads. Runs are interleaved (one of each system per round, after one
warm-up round) and the table gives medians. GFLOP/s count n^3/3 flops; the times cover the factorisation
only (tiles are laid out and registered before, see each module): Parla's from the first spawn to the end of
the last task, StarPU's from the first submission to starpu_task_wait_for_all; neither the exit of the
Parla context nor StarPU's unregistering and shutdown.

The StarPU program (cholesky_starpu.c) is taken from --starpu-bin, else from the Meson build
(build/c/benchmarks/cholesky/cholesky_starpu), else compiled here with cc and pkg-config starpu-1.3 into
build/cholesky-starpu/. StarPU's scheduler is --starpu-sched (default: $STARPU_SCHED, else lws).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import cholesky  # noqa: E402  (examples/cholesky.py)
import dask_cholesky  # noqa: E402
import kernels  # noqa: E402
import lapack_cholesky  # noqa: E402


SETTLE_SECONDS = 0.5


def find_starpu(explicit: Optional[str]) -> Optional[str]:
    """Path of the StarPU Cholesky program, building it if needed; None (with a note) when impossible."""
    if explicit:
        return explicit
    for candidate in (os.path.join(ROOT, "build", "c", "benchmarks", "cholesky", "cholesky_starpu"),
                      os.path.join(ROOT, "build", "cholesky-starpu", "cholesky_starpu")):
        if os.path.exists(candidate) and os.path.getmtime(candidate) >= os.path.getmtime(
                os.path.join(HERE, "cholesky_starpu.c")):
            return candidate
    cc = shutil.which("cc") or shutil.which("gcc")
    pkg = shutil.which("pkg-config")
    if not cc or not pkg:
        print("note: StarPU skipped (no C compiler or pkg-config)")
        return None
    flags = subprocess.run([pkg, "--cflags", "--libs", "starpu-1.3"], capture_output=True, text=True)
    if flags.returncode != 0:
        print("note: StarPU skipped (pkg-config starpu-1.3 failed; apt-get install libstarpu-dev)")
        return None
    out_dir = os.path.join(ROOT, "build", "cholesky-starpu")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "cholesky_starpu")
    cmd = [cc, "-O2", "-std=c11", "-D_GNU_SOURCE", os.path.join(HERE, "cholesky_starpu.c"), "-o", out,
           *flags.stdout.split(), "-ldl", "-lm"]
    built = subprocess.run(cmd, capture_output=True, text=True)
    if built.returncode != 0:
        print("note: StarPU skipped, build failed:\n" + built.stderr)
        return None
    return out


def starpu_runner(binary: str, n: int, block: int, workers: int, sched: str,
                  check: bool) -> Callable[[bool], Tuple[float, Optional[float]]]:
    env = dict(os.environ, STARPU_NCPU=str(workers), STARPU_SILENT="1", STARPU_SCHED=sched,
               STARPU_NCUDA="0", STARPU_NOPENCL="0", OPENBLAS_NUM_THREADS="1")
    blas = kernels.blas_library_path()

    def run(with_check: bool) -> Tuple[float, Optional[float]]:
        cmd = [binary, "-n", str(n), "-b", str(block), "-r", "1", "-blas", blas] + (["-check"] if with_check else [])
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        seconds = residual = None
        for line in p.stdout.splitlines():
            if line.startswith("starpu n="):
                seconds = float(line.split("seconds=")[1].split()[0])
            elif "relative residual" in line:
                residual = float(line.split()[-1])
        if seconds is None:
            raise RuntimeError(f"unexpected output from {binary}: {p.stdout}")
        return seconds, residual
    return run


def dgemm_seconds(n: int, block: int, workers: int, seconds: float = 1.0) -> float:
    """n^3/3 divided by the rate of `workers` threads each running block x block dgemm (c -= a b^T) in a loop
    for about `seconds` (examples/kernels.py: GIL released, one BLAS thread each)."""
    import threading
    rng = np.random.default_rng(0)
    work = [tuple(rng.standard_normal((block, block)) for _ in range(3)) for _ in range(workers)]
    kernels.gemm(*work[0])  # warm up
    t1 = time.perf_counter()
    kernels.gemm(*work[0])
    calls = max(1, int(seconds / max(time.perf_counter() - t1, 1e-6)))
    counts = [0] * workers

    def run(i: int) -> None:
        a, b, c = work[i]
        for _ in range(calls):
            kernels.gemm(a, b, c)
            c *= 0.0  # keep the values bounded
        counts[i] = calls
    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    rate = sum(counts) * 2.0 * block ** 3 / elapsed
    return n ** 3 / 3.0 / rate


def parla_mode(requested: str) -> bool:
    """True to run the PArray version."""
    if requested == "parray":
        return True
    if requested == "no-parray":
        return False
    try:
        import parla.array  # noqa: F401
        return True
    except ImportError:
        return False


def bench_size(n: int, block: int, systems: List[str], workers: int, repeat: int, warmup: int, use_parray: bool,
               starpu_bin: Optional[str], starpu_sched: str, check: bool) -> Dict[str, List[float]]:
    a = cholesky.make_spd(n)
    nt = -(-n // block)
    print(f"\n== n={n} block={block}: {nt}x{nt} tiles, {cholesky.count_tasks(nt)} tasks, {workers} workers/threads, "
          f"{warmup} warm-up + {repeat} timed rounds ==")

    def py_runner(fn: Callable) -> Callable[[bool], Tuple[float, Optional[float]]]:
        def run(with_check: bool) -> Tuple[float, Optional[float]]:
            l, seconds = fn()
            return seconds, (cholesky.residual(a, l) if with_check else None)
        return run

    runners: Dict[str, Callable[[bool], Tuple[float, Optional[float]]]] = {}
    for system in systems:
        if system == "parla":
            runners["parla"] = py_runner(lambda: cholesky.run(a, block, workers, use_parray=use_parray))
        elif system == "parla-5ms":
            runners["parla-5ms"] = py_runner(lambda: cholesky.run(a, block, workers, use_parray=use_parray,
                                                                  context_options={"switch_interval": None}))
        elif system == "parla-native":
            runners["parla-native"] = py_runner(lambda: cholesky.run(a, block, workers, native=True))
        elif system == "parla-native-exit":
            runners["parla-native-exit"] = py_runner(lambda: cholesky.run(a, block, workers, native=True,
                                                                          include_exit=True))
        elif system == "dgemm":
            runners["dgemm"] = lambda with_check: (dgemm_seconds(n, block, workers), None)
        elif system == "dask":
            runners["dask"] = py_runner(lambda: dask_cholesky.run(a, block, workers))
        elif system == "lapack":
            runners["lapack"] = py_runner(lambda: lapack_cholesky.run(a, workers))
        elif system == "sequential":
            runners["sequential"] = py_runner(lambda: cholesky.run_sequential(a, block))
        elif system == "parla1":
            runners["parla1"] = py_runner(lambda: cholesky.run(a, block, 1, use_parray=use_parray))
        elif system == "starpu":
            if starpu_bin:
                runners["starpu"] = starpu_runner(starpu_bin, n, block, workers, starpu_sched, check)
        else:
            raise SystemExit(f"unknown system {system!r} (known: parla, parla-5ms, parla-native, parla-native-exit, "
                             f"dask, lapack, starpu, "
                             f"dgemm, sequential, parla1)")
    times: Dict[str, List[float]] = {s: [] for s in runners}
    for round_ in range(warmup + repeat):
        for system, runner in runners.items():
            with_check = check and round_ == warmup
            # Let OpenBLAS's idle threads (from multi-threaded calls of the previous system or the residual
            # check) stop spinning before the next timed run, so no system inherits another's busy cores.
            time.sleep(SETTLE_SECONDS)
            seconds, residual = runner(with_check)
            if residual is not None:
                print(f"  {system}: relative residual {residual:.2e}")
                assert residual < 1e-10, f"{system}: residual {residual:.3e} too large"
            if round_ >= warmup:
                times[system].append(seconds)
    return times


def report(n: int, block: int, times: Dict[str, List[float]], label: Dict[str, str]) -> None:
    med = {s: statistics.median(t) for s, t in times.items()}
    rate = {s: cholesky.gflops(n, t) for s, t in med.items()}
    print(f"{'system':34s} {'median s':>9s} {'GFLOP/s':>8s} {'best':>6s}  {'runs (s)'}")
    for s in times:
        print(f"{label[s]:34s} {med[s]:9.3f} {rate[s]:8.1f} {cholesky.gflops(n, min(times[s])):6.1f}  "
              f"{' '.join(f'{t:.3f}' for t in times[s])}")
    best = {s: cholesky.gflops(n, min(t)) for s, t in times.items()}
    for ours in ("parla", "parla-native"):
        if ours not in rate:
            continue
        ratios = [f"{rate[ours] / rate[s]:.2f}x {s}" for s in rate if s != ours]
        if ratios:
            print(f"{ours} / others (GFLOP/s ratio of medians): " + ", ".join(ratios))
            print(f"{ours} / others (ratio of best runs):         " +
                  ", ".join(f"{best[ours] / best[s]:.2f}x {s}" for s in best if s != ours))


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="8192:512,4096:128", help="comma-separated n:block pairs")
    p.add_argument("--n", type=int, help="one size (with --block), instead of --sizes")
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--systems", default="parla,parla-native,dask,lapack,starpu,dgemm",
                   help="comma-separated: parla, parla-native, dask, lapack, starpu, dgemm; also sequential (kernels in order on one "
                        "thread, no runtime) and parla1 (parla with one worker), to measure runtime overhead")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--parla-mode", choices=("auto", "parray", "no-parray"), default="auto",
                   help="PArray tiles (auto: when parla.array exists) or NumPy tiles with explicit dependencies")
    p.add_argument("--no-parray", action="store_const", const="no-parray", dest="parla_mode")
    p.add_argument("--starpu-bin", default=None)
    p.add_argument("--starpu-sched", default=os.environ.get("STARPU_SCHED", "lws"))
    p.add_argument("--check", action="store_true", help="check each system's residual once per size")
    args = p.parse_args(argv)
    sizes = [(args.n, args.block)] if args.n else [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",")]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    use_parray = parla_mode(args.parla_mode)
    starpu_bin = find_starpu(args.starpu_bin) if "starpu" in systems else None
    kernels.set_blas_threads(1)
    print(f"OpenBLAS: {kernels.blas_library_path()}")
    print(f"cores: {os.cpu_count()}, workers: {args.workers}; parla: "
          f"{'PArray tiles' if use_parray else 'NumPy tiles, explicit dependencies'}")
    label = {"parla": f"parla ({'PArray' if use_parray else 'no PArray'})",
             "parla-native": "parla, native bodies (PArray)",
             "parla-5ms": "parla, 5 ms switch interval",
             "parla-native-exit": "parla, native, context exit timed",
             "dgemm": f"DGEMM rate, {args.workers} threads",
             "dask": "dask threaded, same kernels", "lapack": f"LAPACK dpotrf ({args.workers} threads)",
             "starpu": f"StarPU C ({args.starpu_sched})", "sequential": "kernels in order, 1 thread, no runtime",
             "parla1": "parla, 1 worker"}
    for n, block in sizes:
        times = bench_size(n, block, systems, args.workers, args.repeat, args.warmup, use_parray, starpu_bin,
                           args.starpu_sched, args.check)
        report(n, block, times, label)


if __name__ == "__main__":
    main()
