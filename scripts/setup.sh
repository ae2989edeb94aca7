#!/usr/bin/env bash
# One-command set-up on Debian 12: installs the Debian packages cocom needs (only those
# missing), then configures and builds a Release build in ./build. Idempotent; quick when
# nothing changed.
#   scripts/setup.sh            install + build
#   BUILD_DIR=dir BUILD_TYPE=Debug scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-Release}
JOBS=${JOBS:-$(nproc)}

PACKAGES=(
  cmake g++ make pkg-config
  libtorch-dev          # tensor runtime (CPU build, 1.13)
  libopenblas0-pthread  # fast BLAS: libtorch otherwise uses the reference BLAS (~25x slower)
  libfaiss-dev librocksdb-dev
  libsentencepiece-dev sentencepiece
  libspdlog-dev nlohmann-json3-dev libcli11-dev libutf8proc-dev
  libgumbo-dev libpoppler-cpp-dev libmd4c-dev  # HTML, PDF and Markdown readers
  libmagic-dev libarchive-dev libxml2-dev  # types by content; .gz/.bz2/.xz; .docx .odt .epub
  libxxhash-dev         # content hashes of checkpoints (a store knows its model by them)
  libstemmer-dev        # Snowball stemming for BM25
  libedit-dev           # line editing and history in `cocom console`
  libcpp-httplib-dev    # HTTP for `cocom serve`
  libgtest-dev
  python3 python3-numpy # the fixture checker used by the tests
  # the server's end-to-end tests drive it with real clients: curl, Python requests, the
  # OpenAI Node client (npm, below) and headless Chromium
  curl python3-requests chromium
)
# Node.js for the OpenAI client test: Debian's packages only when no node is installed
# (a NodeSource node carries its own npm, which Debian's npm package would conflict with).
if ! command -v node >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) != 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# libtorch must resolve libblas.so.3 to OpenBLAS (ENVIRONMENT.md, trap 1).
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
if [[ -n $blas && $blas != *openblas* ]]; then
  echo "setup: warning: libblas.so.3 resolves to $blas, not OpenBLAS; matmuls will be slow" >&2
  echo "       (fix: update-alternatives --config libblas.so.3-x86_64-linux-gnu)" >&2
fi

# The server tests' npm packages (openai, playwright-core; pinned by package-lock.json),
# installed again only when the lock file changed.
lock=tests/serve/package-lock.json
stamp=tests/serve/node_modules/.cocom-lock
if [[ -f $lock ]] && ! cmp -s "$lock" "$stamp" 2>/dev/null; then
  echo "setup: installing the server tests' npm packages (tests/serve)"
  (cd tests/serve && npm ci --no-audit --no-fund --loglevel=error)
  cp "$lock" "$stamp"
fi

if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE"
fi
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "setup: built $BUILD_DIR/bin/cocom"
