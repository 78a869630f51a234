#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the benchmarks need, when they are missing.
# As root it runs apt-get; otherwise it prints the exact command to run.
set -euo pipefail
packages=(build-essential pkg-config python3-venv libffi-dev libstarpu-dev
          openmpi-bin libopenmpi-dev libscalapack-openmpi-dev libopenblas0-pthread)
# libffi-dev: the extension calls native task bodies through libffi (parla.native).
# Needed only by the StarPU benchmark (libstarpu-dev) and by the MPI tests and benchmark (OpenMPI for mpi4py
# and mpirun, ScaLAPACK with OpenBLAS for the pdpotrf peer): without them those are skipped.
optional=(libstarpu-dev openmpi-bin libopenmpi-dev libscalapack-openmpi-dev libopenblas0-pthread)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || apt-get update
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "missing Debian packages; run as root:"
  echo "  apt-get update && apt-get install -y ${missing[*]}"
  # The C engine and the Python package build without the optional ones.
  for p in "${missing[@]}"; do [[ " ${optional[*]} " == *" $p "* ]] || exit 1; done
fi
