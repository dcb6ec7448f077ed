#!/usr/bin/env bash
# Builds mor against LibTorch 2.x and runs the whole test suite with it, on this Debian 12 machine:
# Debian 13 ships LibTorch 2.6 (libtorch-dev, CPU; libtorch-cuda-dev in contrib, CUDA 12.4), so a Debian 13
# root made by debootstrap beside the checkout is an independent 2.x toolchain (GCC 14, CMake 3.31).
#   bash scripts/check_torch2.sh [--cuda] [--ddp-only] [ROOT]      (root; ROOT defaults to ../torch2-root)
# --ddp-only: compile src/ddp.cpp alone (the c10d Gloo path, and with --cuda the NCCL path) instead of the
# whole build and test run: about a minute once the root exists.
# --cuda: LibTorch 2.6 with CUDA + Debian's CUDA toolkit: configures and builds with CUDA, then runs the tests
# on the CPU (a GPU run needs a machine with one: add --device cuda to the mor commands there).
# Debian's nvidia-cudnn package is an installer that downloads cuDNN from NVIDIA at install time; where that
# cannot be reached, --cuda satisfies it with an empty placeholder package and a stub libcudnn.so.9 whose
# functions abort: enough to link and to run on the CPU, where cuDNN is never called. Not part of CI
# (about 1 GB to download for CPU, 3.5 GB for CUDA; 15-20 minutes on 2 cores).
set -euo pipefail
CUDA=0
DDP_ONLY=0
ROOT=""
for a in "$@"; do
  case "$a" in
    --cuda) CUDA=1 ;;
    --ddp-only) DDP_ONLY=1 ;;
    -*) echo "check_torch2.sh: unknown option $a" >&2; exit 2 ;;
    *) ROOT="$a" ;;
  esac
done
REPO="$(cd "$(dirname "$0")/.." && pwd)"
ROOT="$(realpath -m "${ROOT:-$REPO/../torch2-root}")"
[ "$(id -u)" = 0 ] || { echo "check_torch2.sh: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }

if [ ! -e "$ROOT/etc/debian_version" ]; then
  command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap
  debootstrap --variant=minbase --components=main,contrib,non-free trixie "$ROOT" http://deb.debian.org/debian
fi
echo "deb http://deb.debian.org/debian trixie main contrib non-free non-free-firmware" > "$ROOT/etc/apt/sources.list"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

# The checkout and ../shared keep their relative layout inside the root (tests find ../shared/testdata).
mkdir -p "$ROOT/mor/src" "$ROOT/mor/shared"
mounted=()
bind() { mount --bind "$1" "$2"; mounted=("$2" "${mounted[@]}"); }
cleanup() { for m in "${mounted[@]}"; do umount "$m" || umount -l "$m"; done; }
trap cleanup EXIT
bind /proc "$ROOT/proc"
bind /dev "$ROOT/dev"
bind /sys "$ROOT/sys"
bind "$REPO" "$ROOT/mor/src"
[ -d "$REPO/../shared" ] && bind "$(realpath "$REPO/../shared")" "$ROOT/mor/shared"

in_root() { chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive OMP_WAIT_POLICY=PASSIVE bash -euo pipefail -c "$1"; }

COMMON="cmake g++ make ccache pkg-config libsentencepiece-dev nlohmann-json3-dev libcli11-dev libgtest-dev libopenblas0-openmp"
COMMON="$COMMON libsnappy-dev libzstd-dev zlib1g-dev libcurl4-openssl-dev libssl-dev libpcre2-dev libicu-dev"
in_root "apt-get update -q"
if [ "$CUDA" = 0 ]; then
  # Gloo's headers (c10d's ProcessGroupGloo.hpp includes them) come from libgloo-dev.
  in_root "apt-get install -y --no-install-recommends libtorch-dev libgloo-dev $COMMON"
  BUILD=/mor/build-torch2
else
  if ! in_root "dpkg -s nvidia-cudnn >/dev/null 2>&1"; then
    in_root "apt-get install -y --no-install-recommends equivs
      cd /tmp && printf '%s\n' 'Section: contrib/libs' 'Package: nvidia-cudnn' 'Version: 9.0.0.312~cuda12' \
        'Provides: libcudnn.so.9' 'Description: placeholder for the cuDNN installer (mor build check only)' > cudnn.ctl
      equivs-build cudnn.ctl >/dev/null && dpkg -i nvidia-cudnn_*_all.deb"
  fi
  # The CUDA LibTorch's c10d needs libgloo-cuda-dev (it conflicts with libgloo-dev) and NCCL's nccl.h.
  in_root "apt-get install -y --no-install-recommends libtorch-cuda-dev libgloo-cuda-dev libnccl-dev nvidia-cuda-toolkit $COMMON"
  # Stub libcudnn.so.9: every cudnn* function libtorch_cuda.so imports, aborting if ever called.
  in_root "if [ ! -e /usr/local/lib/libcudnn.so.9 ]; then
      nm -D --undefined-only /usr/lib/x86_64-linux-gnu/libtorch_cuda.so | awk '/ cudnn/ {print \$2}' | sed 's/@.*//' | sort -u |
        awk '{print \"void \" \$1 \"(void) { __builtin_trap(); }\"}' > /tmp/cudnn_stub.c
      echo 'libcudnn.so.9 { global: *; };' > /tmp/cudnn_stub.map  # libtorch_cuda asks for symbol@libcudnn.so.9
      gcc -shared -fPIC -Wl,-soname,libcudnn.so.9 -Wl,--version-script=/tmp/cudnn_stub.map \
        -o /usr/local/lib/libcudnn.so.9 /tmp/cudnn_stub.c && ldconfig
    fi"
  BUILD=/mor/build-torch2-cuda
fi

if [ "$DDP_ONLY" = 1 ]; then
  in_root "cd /mor/src && cmake -S . -B $BUILD -DCMAKE_BUILD_TYPE=Release -DMOR_BUILD_TESTS=OFF 2>&1 | grep -E 'mor:|Error|error' || true
    make -C $BUILD src/ddp.cpp.o"
  echo "check_torch2.sh: src/ddp.cpp compiles against LibTorch 2.x$([ "$CUDA" = 1 ] && echo ' with CUDA (Gloo + NCCL)')"
  exit 0
fi
in_root "cd /mor/src && cmake -S . -B $BUILD -DCMAKE_BUILD_TYPE=Release 2>&1 | grep -E 'Torch|CUDA|cuDNN|Error|error' || true
  make -C $BUILD -j\$(nproc) 2>&1 | grep -E 'error|Error|Built target mor\$' || true
  test -x $BUILD/mor
  $BUILD/mor --version
  cd $BUILD && ctest --output-on-failure -j2"
