#!/usr/bin/env bash
# Wall-clock speed of cache policies at real size: DiT-XL/2 256 px with random weights (speed only;
# random weights say nothing about image quality), one class label with CFG (batch 2), DDIM, on
# this machine. Per policy: wall time of the sampling loop, FLOPs, FLOPs speedup, share of tokens
# recomputed, and relative L2 of the latents against the uncached run (needs python3 + torch).
#   benchmarks/dit_cache_speed.sh [steps=50] [threads=2] [policies...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DITCACHE_BUILD_DIR:-$root/build}
steps=${1:-50}; threads=${2:-2}; shift $(( $# > 2 ? 2 : $# ))
policies=("$@"); [ ${#policies[@]} -gt 0 ] || policies=(none fora:interval=3 toca)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "| policy | wall s | wall speedup | TFLOPs | FLOPs speedup | tokens recomputed | rel. L2 vs none |"
echo "|---|---|---|---|---|---|---|"
base_wall=""
for p in "${policies[@]}"; do
  name=$(echo "$p" | tr ':,=' '___')
  "$build/examples/sample_dit" --config DiT-XL/2 --random-weights --seed 0 --labels 207 --sampler ddim --steps "$steps" \
    --cfg-scale 1.5 --threads "$threads" --cache "$p" --quiet --save-latents "$tmp/$name.safetensors" >"$tmp/$name.txt"
  wall=$(grep -oE 'wall [0-9.]+' "$tmp/$name.txt" | cut -d' ' -f2)
  tflops=$(grep -oE '[0-9.]+ TFLOPs of' "$tmp/$name.txt" | cut -d' ' -f1)
  fs=$(grep -oE 'FLOPs speedup [0-9.]+x' "$tmp/$name.txt" | cut -d' ' -f3)
  share=$(grep -oE 'recomputed [0-9.]+%' "$tmp/$name.txt" | cut -d' ' -f2)
  [ -n "$base_wall" ] || base_wall=$wall
  l2=$(python3 - "$tmp/none.safetensors" "$tmp/$name.safetensors" 2>/dev/null <<'PY' || echo "n/a"
import sys
from safetensors.torch import load_file
a = load_file(sys.argv[1])["latents"]; b = load_file(sys.argv[2])["latents"]
print(f"{((a - b).norm() / a.norm()).item():.4f}")
PY
)
  speed=$(python3 -c "print(f'{$base_wall / $wall:.2f}x')")
  echo "| \`$p\` | $wall | $speed | $tflops | $fs | $share | $l2 |"
done
