#!/usr/bin/env bash
# Runs every test (GoogleTest under CTest) of the Release build made by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d build ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
fi
make -C build -j"$(nproc)"
cd build && ctest --output-on-failure -j2 "$@"
