#!/usr/bin/env bash
# Sets up and builds ditcache (scripts/setup.sh), then runs the whole test suite with CTest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DITCACHE_BUILD_DIR:-$root/build}
bash "$root/scripts/setup.sh"
cd "$build"
ctest --output-on-failure -j"${DITCACHE_JOBS:-2}" "$@"
