#!/usr/bin/env bash
# Uncached DiT forward: ditcache vs diffusers' DiTTransformer2DModel on the same machine in the same
# run, interleaved (ditcache, diffusers, ditcache, diffusers) so drift hits both. Needs a built tree
# (scripts/setup.sh) and python3 with torch and diffusers.
#   benchmarks/compare_dit_forward.sh [--config DiT-XL/2] [--batch 2] [--threads 2] [--reps 5]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DITCACHE_BUILD_DIR:-$root/build}
args=("$@")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "| implementation | config | batch | dtype | threads | median ms | min ms | max ms |"
echo "|---|---|---|---|---|---|---|---|"
for round in 1 2; do
  "$build/benchmarks/bench_dit_forward" "${args[@]}" --json "$tmp/c$round.json"
  python3 "$root/benchmarks/diffusers_dit_forward.py" "${args[@]}" --json "$tmp/p$round.json"
done
python3 - "$tmp" <<'PY'
import json, sys, statistics
d = sys.argv[1]
c = statistics.median(json.load(open(f"{d}/c{r}.json"))["median_ms"] for r in (1, 2))
p = statistics.median(json.load(open(f"{d}/p{r}.json"))["median_ms"] for r in (1, 2))
print(f"\nditcache {c:.1f} ms, diffusers {p:.1f} ms: diffusers/ditcache = {p / c:.3f}")
PY
