#!/usr/bin/env bash
# Installs what ditcache needs (Debian packages, LibTorch) and configures and builds it.
# Idempotent: a second run only rebuilds what changed.
#
#   DITCACHE_TORCH=pip     (default) LibTorch from pip's torch >= 2.7: an importable system torch,
#                          else a project venv at .venv
#   DITCACHE_TORCH=debian  Debian's libtorch-dev 1.13 (CPU only), with the OpenMP OpenBLAS pinned
#   DITCACHE_BUILD_DIR     build folder (default: build)
#   DITCACHE_JOBS          parallel compile jobs (default: 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DITCACHE_BUILD_DIR:-$root/build}
jobs=${DITCACHE_JOBS:-2}
torch_kind=${DITCACHE_TORCH:-pip}
log() { printf '[setup] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Debian packages, installed only when missing.
packages=(cmake g++ make pkg-config python3 python3-venv libfmt-dev libspdlog-dev nlohmann-json3-dev
          libcli11-dev libpng-dev libgtest-dev libgmock-dev libsentencepiece-dev
          libavcodec-dev libavformat-dev libswscale-dev libavutil-dev)  # FFmpeg: MP4 output (optional)
[ "$torch_kind" = debian ] && packages+=(libtorch-dev libopenblas0-openmp)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. LibTorch.
prefix_path=""
if [ "$torch_kind" = debian ]; then
  # The pthread OpenBLAS is ~40x slower under LibTorch's OpenMP (toolchain-debian.md §4).
  for a in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
    alt=/usr/lib/x86_64-linux-gnu/openblas-openmp/$a
    [ -e "$alt" ] && as_root update-alternatives --set "$a-x86_64-linux-gnu" "$alt" >/dev/null 2>&1 || true
  done
elif [ "$torch_kind" = pip ]; then
  torch_ok='import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if v >= (2, 7) else 1)'
  python=""
  for candidate in "$root/.venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$torch_ok" 2>/dev/null; then python=$candidate; break; fi
  done
  if [ -z "$python" ]; then
    log "installing torch (>= 2.7) from PyPI into $root/.venv (a few minutes, once)"
    [ -x "$root/.venv/bin/python" ] || python3 -m venv "$root/.venv"
    "$root/.venv/bin/python" -m pip install -q --upgrade pip
    "$root/.venv/bin/python" -m pip install -q "torch>=2.7"
    python=$root/.venv/bin/python
  fi
  prefix_path=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  log "LibTorch $("$python" -c 'import torch; print(torch.__version__)') from $prefix_path"
else
  log "DITCACHE_TORCH must be 'pip' or 'debian', got '$torch_kind'"; exit 2
fi

# 3. Configure (once per LibTorch choice) and build.
torch_args=()
if [ "$torch_kind" = debian ]; then
  torch_args=(-DTorch_DIR=/usr/lib/x86_64-linux-gnu/cmake/Torch)  # never a pip torch from the environment
else
  torch_args=(-DCMAKE_PREFIX_PATH="$prefix_path")
fi
stamp="$build/.ditcache-torch"
if [ ! -f "$build/CMakeCache.txt" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$torch_kind:$prefix_path" ]; then
  rm -f "$build/CMakeCache.txt"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${torch_args[@]}" \
    -Wno-dev >"$root/.cmake-configure.log" 2>&1 || { cat "$root/.cmake-configure.log" >&2; exit 1; }
  echo "$torch_kind:$prefix_path" >"$stamp"
fi
cmake --build "$build" -j"$jobs" -- --no-print-directory | grep -vE '^\[ *[0-9]+%\] (Building|Linking)' || true
test "${PIPESTATUS[0]}" = 0
log "built in $build"
