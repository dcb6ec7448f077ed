#!/usr/bin/env bash
# Runs every test (GoogleTest under CTest) of the Release build made by scripts/setup.sh, building first
# whatever is missing or out of date: the one test executable build/mor_tests (every tests/test_*.cpp; CTest
# runs it once per suite, see tests/ctest_groups.cmake) and the sanitizer fuzz builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
if [ ! -d build ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
fi
make -C build -j"$(nproc)"
# ctest runs two tests at once on 2 cores, each with LibTorch OpenMP threads: spinning idle threads
# would steal the other test's core (measured: training 30x slower), so idle threads sleep.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cd build && ctest --output-on-failure -j2 "$@"
