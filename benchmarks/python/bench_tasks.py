"""Task overheads of Parla in C from Python, side by side with Dask's threaded scheduler and
concurrent.futures.ThreadPoolExecutor, in one run, with the same number of worker threads.

    .venv/bin/python benchmarks/python/bench_tasks.py            # full run, medians of 5
    .venv/bin/python benchmarks/python/bench_tasks.py --quick    # a short run (smaller sizes, 3 reps)
    .venv/bin/python benchmarks/python/bench_tasks.py --rss-only # (e) alone: 10^6 tasks, peak RSS

Workloads (time = from the first spawn/submit, including Python-side spawning, until every task is done;
the time to start the Parla context / executor / Dask pool is included, it is tens of microseconds):

  (a) independent   N independent empty tasks (N = 100,000; Dask: --dask-tasks, default 20,000), each
                    named in a TaskSpace (Parla; the others name them their own way)
  (a) anonymous     the same with anonymous Parla tasks (@spawn()); the peers run (a) again
  (b) chain         a chain of N empty tasks, each depending on the previous one
  (c) waves         1,000 waves of 100 empty tasks, each wave joined by a barrier task that the next
                    wave depends on (Dask: --dask-waves, default 200 waves)
  (d) busy          independent tasks each running a NumPy kernel of fixed size that releases the GIL
                    (np.dot into a preallocated output, single-threaded BLAS), calibrated to ~100 us and
                    ~1 ms single-threaded; parallel efficiency =
                    (n_tasks * single-task time / workers) / wall time. Parla runs twice: as a program
                    does (the context lowers the switch interval to 100 us, so a worker waits at most that
                    long for the GIL the spawning thread holds when its kernel returns), and with
                    switch_interval=None (CPython's 5 ms), column "p-5ms"; "threads" is the bound: plain
                    threads calling the kernel, nobody spawning
  (e) rss           10^6 tasks spawned and run by one program (a subprocess, so the peak RSS is its own):
                    time per task and peak RSS (resource.getrusage ru_maxrss, and VmHWM from /proc, since
                    Linux starts a child's ru_maxrss at its parent's RSS), with and without keeping the
                    tasks in a TaskSpace; bytes per task = (VmHWM - VmHWM before spawning) / tasks

How each system expresses dependencies:

  Parla               @spawn(T[i], dependencies=[...]) with TaskSpace names, all spawned up front.
  Dask                a graph dict {key: (func, *dep_keys)} built in Python and run with
                      dask.threaded.get(graph, keys, num_workers=W); graph building is timed.
  ThreadPoolExecutor  every task is submitted up front; a task with dependencies calls .result() on the
                      futures it depends on, first thing in its body (FIFO submission order guarantees that
                      a task only blocks on tasks that were submitted earlier, so this cannot deadlock).
                      A blocked task occupies its worker thread, which is how TPE users write DAGs.

Prints one table: us/task for each system and the ratios dask/parla and tpe/parla (> 1: Parla faster),
and the efficiencies for (d). Figures are medians over --reps runs.
"""
from __future__ import annotations

import os

# Single-threaded BLAS, so the busy kernel is 'one core of work' and only the runtimes run in parallel.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor, wait as futures_wait  # noqa: E402

import numpy as np  # noqa: E402

from parla import Parla, TaskSpace, spawn  # noqa: E402

try:
    import dask
    import dask.threaded
except ImportError:  # pragma: no cover - dask is in the bench extra
    dask = None


def noop(*_args):
    return None


# ------------------------------------------------------------------------------------------ Parla --

def parla_independent(n, workers):
    t0 = time.perf_counter()
    with Parla(n_workers=workers):
        T = TaskSpace("T")
        for i in range(n):
            @spawn(T[i])
            def task():
                pass
    return time.perf_counter() - t0


def parla_anonymous(n, workers):
    t0 = time.perf_counter()
    with Parla(n_workers=workers):
        for _ in range(n):
            @spawn()
            def task():
                pass
    return time.perf_counter() - t0


def parla_chain(n, workers):
    t0 = time.perf_counter()
    with Parla(n_workers=workers):
        T = TaskSpace("T")

        @spawn(T[0])
        def first():
            pass
        for i in range(1, n):
            @spawn(T[i], dependencies=[T[i - 1]])
            def task():
                pass
    return time.perf_counter() - t0


def parla_waves(waves, width, workers):
    t0 = time.perf_counter()
    with Parla(n_workers=workers):
        W = TaskSpace("W")
        B = TaskSpace("B")
        for k in range(waves):
            before = [B[k - 1]] if k else []
            for j in range(width):
                @spawn(W[k, j], dependencies=before)
                def task():
                    pass

            @spawn(B[k], dependencies=W[k, 0:width])
            def barrier():
                pass
    return time.perf_counter() - t0


def parla_busy(n, workers, kernel, switch_interval=1e-4):
    t0 = time.perf_counter()
    with Parla(n_workers=workers, switch_interval=switch_interval):
        T = TaskSpace("T")
        for i in range(n):
            spawn(T[i])(kernel)
    return time.perf_counter() - t0


def parla_busy_5ms(n, workers, kernel):
    """(d) with the interpreter's switch interval left alone (5 ms unless the program changed it)."""
    return parla_busy(n, workers, kernel, switch_interval=None)


# ------------------------------------------------------------------------------------ ThreadPool --

def _after(deps):
    for f in deps:
        f.result()


def _chain_link(prev):
    prev.result()


def tpe_independent(n, workers):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(noop) for _ in range(n)]
        futures_wait(futures)
    return time.perf_counter() - t0


def tpe_chain(n, workers):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        f = ex.submit(noop)
        for _ in range(1, n):
            f = ex.submit(_chain_link, f)
        f.result()
    return time.perf_counter() - t0


def tpe_waves(waves, width, workers):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        barrier = None
        for _ in range(waves):
            before = (barrier,) if barrier is not None else ()
            wave = [ex.submit(_after, before) for _ in range(width)]
            barrier = ex.submit(_after, wave)
        barrier.result()
    return time.perf_counter() - t0


def tpe_busy(n, workers, kernel):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(kernel) for _ in range(n)]
        futures_wait(futures)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------- threads --

def threads_busy(n, workers, kernel):
    """The bound for (d): `workers` plain threads calling the kernel n / workers times each, no runtime."""
    import threading
    per = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]

    def loop(k):
        for _ in range(k):
            kernel()
    threads = [threading.Thread(target=loop, args=(k,)) for k in per]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------- Dask --

def dask_independent(n, workers):
    t0 = time.perf_counter()
    graph = {("t", i): (noop,) for i in range(n)}
    dask.threaded.get(graph, list(graph), num_workers=workers)
    return time.perf_counter() - t0


def dask_chain(n, workers):
    t0 = time.perf_counter()
    graph = {("c", 0): (noop,)}
    for i in range(1, n):
        graph[("c", i)] = (noop, ("c", i - 1))
    dask.threaded.get(graph, ("c", n - 1), num_workers=workers)
    return time.perf_counter() - t0


def dask_waves(waves, width, workers):
    t0 = time.perf_counter()
    graph = {}
    for k in range(waves):
        for j in range(width):
            graph[("w", k, j)] = (noop, ("b", k - 1)) if k else (noop,)
        graph[("b", k)] = (noop, [("w", k, j) for j in range(width)])
    dask.threaded.get(graph, ("b", waves - 1), num_workers=workers)
    return time.perf_counter() - t0


def dask_busy(n, workers, kernel):
    t0 = time.perf_counter()
    graph = {("k", i): (kernel,) for i in range(n)}
    dask.threaded.get(graph, list(graph), num_workers=workers)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------- busy kernel --

def make_kernel(size):
    """np.dot of two fixed size x size float64 matrices into a preallocated output (releases the GIL
    inside BLAS). Each thread gets its own output so the threads do not write the same memory."""
    import threading
    rng = np.random.default_rng(0)
    a = rng.random((size, size))
    b = rng.random((size, size))
    local = threading.local()

    def kernel():
        out = getattr(local, "out", None)
        if out is None:
            out = local.out = np.empty((size, size))
        np.dot(a, b, out=out)
    return kernel


def time_kernel(kernel, reps=200):
    kernel()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        kernel()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def calibrate(target_s):
    """Smallest matrix size whose kernel takes at least target_s single-threaded (median)."""
    lo, hi = 4, 8
    while time_kernel(make_kernel(hi), 50) < target_s:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if time_kernel(make_kernel(mid), 50) < target_s:
            lo = mid
        else:
            hi = mid
    kernel = make_kernel(hi)
    return hi, kernel, time_kernel(kernel, 400 if target_s < 5e-4 else 100)


# ------------------------------------------------------------------------------------------ (e) ---

RSS_CHILD = r"""
import resource, sys, time
from parla import Parla, TaskSpace, spawn
n, mode, workers = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def vmhwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0
hwm0 = vmhwm()
t0 = time.perf_counter()
with Parla(n_workers=workers):
    if mode == "taskspace":
        T = TaskSpace("T")
        for i in range(n):
            @spawn(T[i])
            def task():
                pass
    else:
        for i in range(n):
            @spawn()
            def task():
                pass
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{elapsed} {base} {peak} {vmhwm()} {hwm0}")
"""


def measure_rss(n, mode, workers):
    r = subprocess.run([sys.executable, "-c", RSS_CHILD, str(n), mode, str(workers)], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        return None, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
    elapsed, base, peak, hwm, hwm0 = r.stdout.split()
    return (float(elapsed), int(base) * 1024, int(peak) * 1024, int(hwm) * 1024, int(hwm0) * 1024), None


# ------------------------------------------------------------------------------------------ main ---

def median_of(fn, reps, *args):
    fn(*args)  # warm-up (imports, thread pools, allocator)
    return statistics.median(fn(*args) for _ in range(reps))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker threads (all systems)")
    ap.add_argument("--reps", type=int, default=5, help="runs per measurement; the median is reported")
    ap.add_argument("--quick", action="store_true", help="small sizes and 3 reps, for a smoke test")
    ap.add_argument("--tasks", type=int, default=100_000, help="tasks in (a) and (b) for Parla and TPE")
    ap.add_argument("--dask-tasks", type=int, default=20_000, help="tasks in (a) and (b) for Dask")
    ap.add_argument("--waves", type=int, default=1000, help="waves in (c) for Parla and TPE")
    ap.add_argument("--dask-waves", type=int, default=200, help="waves in (c) for Dask")
    ap.add_argument("--width", type=int, default=100, help="tasks per wave in (c)")
    ap.add_argument("--busy-seconds", type=float, default=0.5,
                    help="ideal wall time of each (d) run; sets the number of busy tasks")
    ap.add_argument("--rss-tasks", type=int, default=1_000_000, help="tasks in (e); 0 skips it")
    ap.add_argument("--rss-only", action="store_true", help="run (e) alone")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps = min(args.reps, 3)
        args.tasks, args.dask_tasks = 20_000, 5_000
        args.waves, args.dask_waves = 200, 50
        args.busy_seconds = 0.2
        args.rss_tasks = min(args.rss_tasks, 100_000)
    W = args.workers
    have_dask = dask is not None
    rows = []
    results = {"workers": W, "reps": args.reps, "python": sys.version.split()[0], "numpy": np.__version__,
               "dask": getattr(dask, "__version__", None)}

    print(f"# bench_tasks: {W} workers, median of {args.reps} runs, Python {results['python']}, "
          f"NumPy {np.__version__}, Dask {results['dask']}, {os.cpu_count()} CPUs", flush=True)

    def overhead(name, parla_fn, tpe_fn, dask_fn, n_pt, n_dask, count):
        p = median_of(parla_fn, args.reps, *n_pt, W) / count(*n_pt) * 1e6
        t = median_of(tpe_fn, args.reps, *n_pt, W) / count(*n_pt) * 1e6
        d = median_of(dask_fn, args.reps, *n_dask, W) / count(*n_dask) * 1e6 if have_dask else float("nan")
        rows.append((name, p, d, t, d / p, t / p, count(*n_pt), count(*n_dask)))
        results[name] = {"parla_us": p, "dask_us": d, "tpe_us": t, "tasks": count(*n_pt),
                         "dask_tasks": count(*n_dask)}
        print(f"  measured {name}", flush=True)

    if not args.rss_only:
        overhead("(a) independent", parla_independent, tpe_independent, dask_independent,
                 (args.tasks,), (args.dask_tasks,), lambda n: n)
        overhead("(a) anonymous", parla_anonymous, tpe_independent, dask_independent,
                 (args.tasks,), (args.dask_tasks,), lambda n: n)
        overhead("(b) chain", parla_chain, tpe_chain, dask_chain, (args.tasks,), (args.dask_tasks,), lambda n: n)
        overhead("(c) waves", parla_waves, tpe_waves, dask_waves, (args.waves, args.width),
                 (args.dask_waves, args.width), lambda k, w: k * (w + 1))

    eff_rows = []
    for label, target in () if args.rss_only else (("100 us", 100e-6), ("1 ms", 1e-3)):
        size, kernel, t_task = calibrate(target)
        n = max(10 * W, int(round(args.busy_seconds * W / t_task)))
        ideal = n * t_task / W
        systems = [("parla", parla_busy), ("parla_5ms", parla_busy_5ms), ("dask", dask_busy), ("tpe", tpe_busy),
                   ("threads", threads_busy)]
        systems = [(name, fn) for name, fn in systems if name != "dask" or have_dask]
        # Interleaved rounds (one run of each system per round, after a warm-up of each), so that a change in
        # the machine's load moves every system alike; medians over the rounds.
        walls = {name: [] for name, _ in systems}
        for _name, fn in systems:
            fn(n, W, kernel)
        for _ in range(args.reps):
            for name, fn in systems:
                walls[name].append(fn(n, W, kernel))
        effs = {name: ideal / statistics.median(w) for name, w in walls.items()}
        effs.setdefault("dask", float("nan"))
        eff_rows.append((label, size, t_task, n, effs))
        results[f"(d) busy {label}"] = {"matrix": size, "task_us": t_task * 1e6, "tasks": n, **effs}
        print(f"  measured (d) busy {label}", flush=True)

    rss_rows = []
    if args.rss_tasks:
        for mode in ("anonymous", "taskspace"):
            out, err = measure_rss(args.rss_tasks, mode, W)
            rss_rows.append((mode, out, err))
            if out:
                results[f"(e) rss {mode}"] = {"tasks": args.rss_tasks, "seconds": out[0],
                                              "base_maxrss_bytes": out[1], "maxrss_bytes": out[2],
                                              "vmhwm_bytes": out[3], "base_vmhwm_bytes": out[4],
                                              "bytes_per_task": (out[3] - out[4]) / args.rss_tasks}
        print("  measured (e) rss", flush=True)

    # ---- the table
    if rows:
        print()
        print(f"Task overhead, us per task (spawn + run + wait), {W} workers, median of {args.reps}")
        print(f"{'workload':<17} {'parla':>9} {'dask':>9} {'tpe':>9} {'dask/parla':>11} {'tpe/parla':>10}   tasks")
        for name, p, d, t, rd, rt, n, nd in rows:
            tasks = f"{n:,}" + (f" (dask {nd:,})" if nd != n else "")
            print(f"{name:<17} {p:9.2f} {d:9.2f} {t:9.2f} {rd:10.1f}x {rt:9.1f}x   {tasks}")
    if eff_rows:
        print()
        print(f"Parallel efficiency of GIL-releasing busy tasks (np.dot, single-threaded BLAS), {W} workers")
        print(f"{'task':<8} {'matrix':>7} {'measured':>10} {'tasks':>7} {'parla':>7} {'p-5ms':>7} {'dask':>7} "
              f"{'tpe':>7} {'threads':>8} {'parla/threads':>14}")
        for label, size, t_task, n, effs in eff_rows:
            print(f"{label:<8} {size:>5}^2 {t_task * 1e6:8.1f}us {n:7d} {effs['parla']:7.3f} {effs['parla_5ms']:7.3f} "
                  f"{effs['dask']:7.3f} {effs['tpe']:7.3f} {effs['threads']:8.3f} "
                  f"{effs['parla'] / effs['threads']:14.3f}")
        print("  threads: plain Python threads calling the kernel in a loop, no runtime: the bound on this machine;\n"
              "  p-5ms: Parla with switch_interval=None (CPython's 5 ms switch interval, as before the context set 100 us)")
    if rss_rows:
        print()
        print(f"{args.rss_tasks:,} tasks in one program (subprocess), {W} workers")
        for mode, out, err in rss_rows:
            if out is None:
                print(f"  {mode:<10} failed: {err}")
                continue
            elapsed, base, peak, hwm, hwm0 = out
            print(f"  {mode:<10} {elapsed:7.2f} s = {elapsed / args.rss_tasks * 1e6:5.2f} us/task, "
                  f"peak RSS: ru_maxrss {peak / 2**20:7.1f} MiB, VmHWM {hwm / 2**20:7.1f} MiB "
                  f"(before spawning: ru_maxrss {base / 2**20:.1f} MiB, VmHWM {hwm0 / 2**20:.1f} MiB; "
                  f"{(hwm - hwm0) / args.rss_tasks:.0f} bytes/task)")
        print("  (Linux carries the parent's RSS at fork into the child's ru_maxrss, so ru_maxrss is at least the "
              "benchmark process's size;\n   VmHWM from /proc/self/status is the child's own high-water mark.)")
    if rows:
        print()
        print(f"Dask runs smaller graphs (its per-task cost is ~10x higher): (a), (b) with {args.dask_tasks:,} tasks, "
              f"(c) with {args.dask_waves} waves; figures are per task. ThreadPoolExecutor expresses dependencies "
              f"by .result() calls at the start of each task body (see the module docstring).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
