#!/usr/bin/env python3
"""Runs the C benchmarks side by side and prints one table.

    python3 benchmarks/run_c.py [BUILD_DIR] [--reps N] [--workers W]

Runs BUILD_DIR/benchmarks/c/bench_tasks (libparla) and, when it was built,
BUILD_DIR/benchmarks/c/bench_starpu twice: with StarPU's default scheduler and
with STARPU_SCHED=eager. Every program prints lines such as

    RESULT system=parla workload=independent workers=2 us_per_task=0.512

(medians over --reps repetitions). The table gives, per workload, microseconds
per task for each system, the throughput ratio starpu/parla (time per task of
StarPU divided by ours: > 1 means libparla is faster), parallel efficiencies
for the busy workloads, and libparla's memory per pending task. Standard
library only.
"""
import argparse
import os
import subprocess
import sys

WORKLOADS = ["independent", "chain", "waves", "busy100us", "busy1ms", "graph1m"]


def parse_results(text):
    out = []
    for line in text.splitlines():
        if not line.startswith("RESULT "):
            continue
        fields = {}
        for item in line.split()[1:]:
            if "=" in item:
                k, v = item.split("=", 1)
                fields[k] = v
        out.append(fields)
    return out


def run(cmd, env_extra, timeout):
    env = dict(os.environ)
    env.update(env_extra)
    label = " ".join(f"{k}={v}" for k, v in env_extra.items())
    print(f"# running: {label} {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        print(f"# {cmd[0]} exited with {proc.returncode}:\n{proc.stderr}", file=sys.stderr)
    return parse_results(proc.stdout)


def fnum(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", nargs="?", default="build", help="meson build directory (default: build)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per workload (median; default 5)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="worker threads (default: number of CPUs)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per program")
    args = ap.parse_args()

    bindir = os.path.join(args.build, "benchmarks", "c")
    ours = os.path.join(bindir, "bench_tasks")
    peer = os.path.join(bindir, "bench_starpu")
    if not os.path.exists(ours):
        sys.exit(f"{ours} not found: build with `meson setup {args.build} -Dbenchmarks=true && ninja -C {args.build}`")
    common = ["--reps", str(args.reps), "--workers", str(args.workers)]

    results = {}  # system -> workload -> fields
    for r in run([ours] + common, {}, args.timeout):
        results.setdefault("parla", {})[r["workload"]] = r

    starpu_systems = []
    if os.path.exists(peer):
        base = {"STARPU_NCPU": str(args.workers), "STARPU_NCUDA": "0", "STARPU_NOPENCL": "0",
                "STARPU_SILENT": "1"}
        for sched in ("default", "eager"):
            env = dict(base)
            if sched != "default":
                env["STARPU_SCHED"] = sched
            name = f"starpu-{sched}"
            starpu_systems.append(name)
            for r in run([peer] + common, env, args.timeout):
                results.setdefault(name, {})[r["workload"]] = r
    else:
        print("# bench_starpu not built (StarPU 1.3 not found): libparla only", file=sys.stderr)

    def get(system, workload, key):
        try:
            return float(results[system][workload][key])
        except (KeyError, ValueError):
            return None

    head = ["workload", "parla us/task"]
    for s in starpu_systems:
        head.append(f"{s} us/task")
    for s in starpu_systems:
        head.append(f"{s}/parla")
    head += ["parla eff"] + [f"{s} eff" for s in starpu_systems]
    rows = []
    for w in WORKLOADS:
        if w not in results.get("parla", {}) and not any(w in results.get(s, {}) for s in starpu_systems):
            continue
        p = get("parla", w, "us_per_task")
        row = [w, fnum(p)]
        for s in starpu_systems:
            row.append(fnum(get(s, w, "us_per_task")))
        for s in starpu_systems:
            q = get(s, w, "us_per_task")
            row.append(fnum(q / p if (p and q) else None, "{:.2f}x"))
        row.append(fnum(get("parla", w, "efficiency")))
        for s in starpu_systems:
            row.append(fnum(get(s, w, "efficiency")))
        rows.append(row)

    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(head))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)))

    m = results.get("parla", {}).get("memory")
    if m:
        print()
        print(f"memory: {m.get('bytes_per_task')} bytes per pending task (peak RSS growth, "
              f"{m.get('tasks')} tasks waiting on one gate; RSS growth {m.get('rss_bytes_per_task')}); "
              f"create+submit {m.get('create_s')} s, release+run {m.get('release_run_s')} s")
    g = results.get("parla", {}).get("graph1m")
    if g:
        print(f"graph1m: 10^6-task random graph created and run in {g.get('seconds')} s")
    print(f"workers={args.workers} reps={args.reps}; ratio = StarPU time per task / libparla "
          f"time per task (> 1: libparla faster)")


if __name__ == "__main__":
    main()
