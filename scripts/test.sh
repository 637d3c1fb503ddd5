#!/usr/bin/env bash
# Sets up and builds ditcache (scripts/setup.sh), then runs the whole test suite with CTest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DITCACHE_BUILD_DIR:-$root/build}
bash "$root/scripts/setup.sh"
cd "$build"
# CTest runs two test processes at once and each uses every core: idle OpenMP threads should sleep,
# not spin, or the two processes slow each other down (many tests are chains of small ops).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ctest --output-on-failure -j"${DITCACHE_JOBS:-2}" "$@"
