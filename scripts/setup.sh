#!/usr/bin/env bash
# Sets up mor on Debian 12: installs the dependencies (Debian packages only), builds in Release, then
# runs the main job on the embedded default (`build/mor quickstart`) unless --no-run is given.
#   bash scripts/setup.sh [--no-run] [--no-install]
# BLAS: Debian's LibTorch uses OpenBLAS for float32 matmuls (oneDNN for bfloat16). Measured on the 2-core
# AMD EPYC build machine with `bench_llama --kernels` (figures in README): libopenblas0-openmp shares
# LibTorch's OpenMP pool and needs no environment; libopenblas0-pthread is only competitive with
# OMP_WAIT_POLICY=PASSIVE exported before every run (spinning threads otherwise fight the pool), and was
# not reliably faster, so the OpenMP build is selected.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=1
INSTALL=1
for a in "$@"; do
  case "$a" in
    --no-run) RUN=0 ;;
    --no-install) INSTALL=0 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if [ "$INSTALL" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends \
    cmake g++ make ccache pkg-config \
    libtorch-dev libsentencepiece-dev nlohmann-json3-dev libcli11-dev libgtest-dev \
    libopenblas0-openmp python3-torch python3-sentencepiece
  # Select the OpenMP build of OpenBLAS (it shares LibTorch's thread pool on few cores).
  arch_triplet="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
  for lib in libblas.so.3 liblapack.so.3; do
    alt="/usr/lib/$arch_triplet/openblas-openmp/$lib"
    if [ -e "$alt" ]; then $SUDO update-alternatives --set "$lib-$arch_triplet" "$alt" || true; fi
  done
fi

# The cross-check of our .arrow files with an independent reader (npm's apache-arrow); without it
# that one test skips with a message.
if command -v npm >/dev/null; then
  (cd tests/arrow_js && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "setup.sh: npm ci in tests/arrow_js failed; the apache-arrow cross-check will be skipped" >&2
fi

export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
make -C build -j"$(nproc)"

if [ "$RUN" = 1 ]; then
  build/mor quickstart
fi
