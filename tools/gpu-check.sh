#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, as one script for a machine with the CUDA driver, CuPy, Meson, ninja,
# NumPy, SciPy, PyYAML and pytest but no meson-python (build with Meson directly, no network):
#   bash tools/gpu-check.sh [OUTDIR]
# Builds libparla and parla._core, runs the C tests (the real driver is found, as well as the double),
# the CUDA Python tests, the CuPy chain benchmark and the copy path's bandwidth against the driver's own
# calls (bench_cuda_copy: host to device from pinned memory, pageable memory and through the runtime;
# GPU to GPU with cuMemcpyPeer and through the runtime where there are two or more GPUs). Logs go to
# OUTDIR (default /tmp/parla-gpu-out). Without an NVIDIA GPU it says so and exits 0 (nothing to check).
set -uo pipefail
OUT=${1:-/tmp/parla-gpu-out}
B=/tmp/parla-gpu-build
mkdir -p "$OUT"
status=0
step() { echo "== $*" | tee -a "$OUT/summary.txt"; }
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  step "no NVIDIA GPU (nvidia-smi finds none): skipped"
  exit 0
fi
step "build"
{ meson setup "$B" -Dpython=true -Dbenchmarks=true --buildtype=release && ninja -C "$B"; } >"$OUT/build.log" 2>&1 \
  || { step "build failed"; tail -30 "$OUT/build.log"; exit 1; }
PKG=$B/pkg
rm -rf "$PKG" && mkdir -p "$PKG" && cp -r python/parla "$PKG/" && cp "$B"/src/python/_core*.so "$PKG/parla/"
export PYTHONPATH=$PKG PYTHONUNBUFFERED=1
nvidia-smi -L >>"$OUT/summary.txt" 2>&1
python3 -c "from parla import Parla; p = Parla(); p.__enter__(); print([d for d in p.device_table if d['cuda']]); p.__exit__(None, None, None)" \
  2>&1 | tee -a "$OUT/summary.txt"
step "C tests"
meson test -C "$B" --print-errorlogs >"$OUT/ctests.log" 2>&1 || status=1
tail -20 "$OUT/ctests.log" | tee -a "$OUT/summary.txt"
step "CUDA Python tests"
python3 -m pytest -q -p no:cacheprovider tests/python/test_cuda.py tests/python/test_cuda_fake.py tests/python/test_devices.py \
  >"$OUT/pytest.log" 2>&1 || status=1
tail -15 "$OUT/pytest.log" | tee -a "$OUT/summary.txt"
step "CuPy chain benchmark"
timeout 300 python3 benchmarks/python/bench_cuda.py --reps 3 2>&1 | tee -a "$OUT/summary.txt" || status=1
step "copy bandwidth: the runtime against cuMemcpy (pinned and pageable host memory, GPU to GPU)"
timeout 300 "$B"/benchmarks/c/bench_cuda_copy 256 20 2>&1 | tee -a "$OUT/summary.txt" || status=1
exit $status
