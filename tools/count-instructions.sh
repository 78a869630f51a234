#!/bin/bash
# Instructions executed per C benchmark workload, counted by valgrind's callgrind: a figure that does not move
# with the load of a shared machine, for comparing two builds of the engine (before/after a change).
#
# usage: tools/count-instructions.sh BUILD_DIR [BUILD_DIR ...]   (each a meson build with -Dbenchmarks=true)
#   ROUNDS=5 (median of that many runs), WORKLOADS="independent chain waves"
# Prints, per workload and build, the median of the instructions the whole process executed (one worker: the
# main thread creates and submits, the worker runs; set-up, a warm-up of 20,000 tasks, one rep of the
# workload; an idle worker's spinning counts too, hence the median) and its ratio to the first build's.
# Needs valgrind (Debian package valgrind); exit status 2 when it is missing.
set -euo pipefail
command -v valgrind >/dev/null || { echo "count-instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
[ $# -ge 1 ] || { sed -n 4,8p "$0" >&2; exit 2; }
ROUNDS=${ROUNDS:-5}
WORKLOADS=${WORKLOADS:-"independent chain waves"}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '%-12s %-40s %16s %8s\n' workload build "instructions" "ratio"
for w in $WORKLOADS; do
  first=
  for b in "$@"; do
    bin="$b/benchmarks/c/bench_tasks"
    [ -x "$bin" ] || { echo "count-instructions: $bin not found (build with -Dbenchmarks=true)" >&2; exit 2; }
    for r in $(seq "$ROUNDS"); do
      valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --reps 1 --workers 1 --only "$w" \
        > "$tmp/log" 2>&1
      grep -oP 'Collected : \K[0-9]+' "$tmp/log"
    done | sort -n > "$tmp/counts"
    med=$(awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}' "$tmp/counts")
    first=${first:-$med}
    awk -v w="$w" -v b="$b" -v m="$med" -v f="$first" 'BEGIN {printf "%-12s %-40s %16d %8.3f\n", w, b, m, m/f}'
  done
done
