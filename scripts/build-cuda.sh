#!/usr/bin/env bash
# Builds bin/cocom against a CUDA-enabled libtorch (Debian's libtorch is CPU-only), for
# `cocom --device cuda ...`. The libtorch comes from TORCH_DIR (its share/cmake/Torch folder)
# or from the PyTorch that `python3` imports. The other dependencies are Debian's packages;
# on a machine whose package manager is not Debian's or that cannot reach a registry, give a
# folder of their .deb files (downloaded elsewhere with `apt-get download`) as DEBS: they are
# unpacked and copied under /usr without replacing any file already there.
#
#   [DEBS=dir] [TORCH_DIR=dir] [BUILD_DIR=build-cuda] scripts/build-cuda.sh
#
# Only the `cocom` binary is built (tests and benchmarks stay CPU-side); the log is
# $BUILD_DIR/build.log.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-cuda}
mkdir -p "$BUILD_DIR"

if [[ -n ${DEBS:-} ]]; then
  root=$(mktemp -d /tmp/cocom-debs.XXXXXX)
  for f in "$DEBS"/*.deb; do dpkg-deb -x "$f" "$root"; done
  cp -rn "$root"/usr/. /usr/
  lib=/usr/lib/x86_64-linux-gnu
  for n in libblas liblapack; do
    [[ -e $lib/$n.so.3 ]] || ln -s openblas-pthread/$n.so.3 "$lib/$n.so.3"
    [[ -e $lib/$n.so ]] || ln -s $n.so.3 "$lib/$n.so"
  done
  ldconfig
fi

if [[ -z ${TORCH_DIR:-} ]]; then
  TORCH_DIR=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "share", "cmake", "Torch"))')
fi
echo "build-cuda.sh: libtorch from $TORCH_DIR" >&2

# PyTorch's wheels ship their own {fmt} headers (a newer major version) in the include folder
# that precedes /usr/include; spdlog must see the {fmt} it was built with, so that one goes first.
cxxflags=""
torch_inc=$(cd "$TORCH_DIR/../../../include" 2>/dev/null && pwd || true)
if [[ -n $torch_inc && -d $torch_inc/fmt && -d /usr/include/fmt ]]; then
  mkdir -p "$BUILD_DIR/fmt-first"
  ln -sfn /usr/include/fmt "$BUILD_DIR/fmt-first/fmt"
  cxxflags="-I$PWD/$BUILD_DIR/fmt-first"
fi

# COCOM_SPM_DEEPBIND=OFF: see model/CMakeLists.txt. --no-as-needed: nothing calls
# libtorch_cuda.so directly, and without it the linker drops the library whose loading
# registers the CUDA backend.
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$TORCH_DIR" \
  -DCOCOM_BUILD_TESTS=OFF -DCOCOM_SPM_DEEPBIND=OFF -DCMAKE_CXX_FLAGS="$cxxflags" -DCMAKE_EXE_LINKER_FLAGS=-Wl,--no-as-needed \
  -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--no-as-needed 2>&1 | tee "$BUILD_DIR/build.log"
cmake --build "$BUILD_DIR" -j "$(nproc)" --target cocom_cli -- -k 2>&1 | tee -a "$BUILD_DIR/build.log"
test -x "$BUILD_DIR/bin/cocom"
echo "build-cuda.sh: built $BUILD_DIR/bin/cocom" >&2
