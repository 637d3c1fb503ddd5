#!/usr/bin/env bash
# The main job: sets up and builds ditcache, then samples every class of the embedded shapes10 DiT
# (models/shapes10, trained by the project: docs/embedded-model.md) uncached and with ToCa from
# the same noise, writes out/uncached.png, out/cached.png and out/side_by_side.png, and prints the
# wall-clock speedup, FLOPs speedup, fidelity (PSNR / SSIM vs uncached) and class accuracy.
# Extra arguments go to compare_cache (e.g. --cache fora:interval=3, --per-class 4, --steps 25).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DITCACHE_BUILD_DIR:-$root/build}
bash "$root/scripts/setup.sh"
exec "$build/examples/compare_cache" --output-dir "$root/out" "$@"
