#!/usr/bin/env bash
# Which OpenBLAS build makes mor fastest on this machine: Debian's libopenblas0-openmp (shares LibTorch's
# OpenMP pool) against libopenblas0-pthread (its own threads), the latter with and without
# OMP_WAIT_POLICY=PASSIVE. Each option runs `bench_llama --kernels` (float32/bfloat16 matmul peak and a
# MoLA-like step) and `bench_moe_lora` (a whole 7B-wide decoder layer, forward+backward, MoLA 8 experts).
#   bash bench/blas_choice.sh [BUILD_DIR] [--pick]     (root: switches the libblas/liblapack/libopenblas
# alternatives while it measures; --pick leaves the fastest selected, otherwise the one found is restored)
#   bash bench/blas_choice.sh --select openmp|pthread  (only selects that build; scripts/setup.sh uses it)
set -euo pipefail
BUILD=build
PICK=0
SELECT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pick) PICK=1 ;;
    --select) SELECT="$2"; shift ;;
    *) BUILD="$1" ;;
  esac
  shift
done
triplet="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
libdir="/usr/lib/$triplet"
select_blas() {  # openmp | pthread: all three alternatives, so LibTorch never mixes two builds
  for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
    if [ -e "$libdir/openblas-$1/$lib" ]; then update-alternatives --quiet --set "$lib-$triplet" "$libdir/openblas-$1/$lib"; fi
  done
}
if [ -n "$SELECT" ]; then select_blas "$SELECT"; exit 0; fi
current="$(readlink -f "$libdir/libblas.so.3" | grep -o 'openblas-[a-z]*' | sed 's/openblas-//' || true)"
for v in openmp pthread; do
  [ -e "$libdir/openblas-$v/libblas.so.3" ] || apt-get install -y --no-install-recommends "libopenblas0-$v" >/dev/null
done

# score: the whole-layer MoLA forward+backward time (ms), the figure closest to training.
declare -A score
run_option() {  # name blas wait_policy
  local name=$1 blas=$2 wait=$3
  select_blas "$blas"
  echo "== $name"
  local envs=(env -u OMP_WAIT_POLICY)
  [ -n "$wait" ] && envs=(env OMP_WAIT_POLICY="$wait")
  "${envs[@]}" "$BUILD/bench_llama" --kernels --threads 2 | grep -E 'peak|mola-like'
  local out
  out="$("${envs[@]}" "$BUILD/bench_moe_lora" 2 2 2>/dev/null)"
  echo "$out" | grep -E '^(base|LoRA|MoLA|loop)'
  score[$name]="$(echo "$out" | awk '/^MoLA 8 exp/ {for (i = 1; i <= NF; i++) if ($i == "layer") {print $(i + 1); exit}}')"
}
run_option openmp openmp ""
run_option pthread pthread ""
run_option pthread+PASSIVE pthread PASSIVE

echo "== whole-layer MoLA-8 fwd+bwd (ms): openmp ${score[openmp]:-?}, pthread ${score[pthread]:-?}, pthread+PASSIVE ${score[pthread+PASSIVE]:-?}"
best=openmp
# pthread only counts without PASSIVE: mor cannot set OMP_WAIT_POLICY for its users (libgomp reads it before main).
if [ -n "${score[pthread]:-}" ] && [ -n "${score[openmp]:-}" ] &&
   awk "BEGIN {exit !(${score[pthread]} < 0.95 * ${score[openmp]})}"; then best=pthread; fi
if [ "$PICK" = 1 ]; then
  select_blas "$best"; echo "selected: libopenblas0-$best"
else
  select_blas "${current:-openmp}"; echo "fastest: libopenblas0-$best (left: ${current:-openmp})"
fi
