#!/usr/bin/env bash
# The PixArt-α numbers of docs/benchmarks.md: FLOPs and cache memory of the released PixArt-XL-2
# 256, 512 and 1024-MS (--flops-only: no weights, milliseconds), then wall time on this machine of
# the 256 and 512 architectures (random weights, one random caption of 120 tokens + CFG, 20
# DPM-Solver++ steps, guidance 4.5) per policy: uncached, ToCa's PixArt default (N=3, r0=0.3) and
# FORA (N=3). The wall runs take ~25 minutes on a 2-vCPU machine; pass "flops" or "wall" (or
# "wall256" / "wall512" / "wall1024", the last for GPUs) to run one part. DITCACHE_DEVICE=cuda and
# DITCACHE_DTYPE=bf16 time a GPU (each run then starts with an untimed 2-step warm-up).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${DITCACHE_BUILD_DIR:-$root/build}/examples/sample_pixart
threads=${DITCACHE_THREADS:-2}
device=${DITCACHE_DEVICE:-cpu}
dtype=${DITCACHE_DTYPE:-fp32}
parts=${*:-flops wall}
out=$root/out/bench/pixart
mkdir -p "$out"
warm=()
[ "$device" != cpu ] && warm=(--warmup)
wall() {  # size: 256, 512 or 1024-MS
  for policy in none toca fora:interval=3; do
    OMP_WAIT_POLICY=PASSIVE "$bin" --config "PixArt-XL-2-$1" --random-weights --random-captions 1 --steps 20 \
      --threads "$threads" --device "$device" --dtype "$dtype" --quiet --cache "$policy" "${warm[@]}" \
      --save-latents "$out/latents-$1-$device-${policy%%:*}.safetensors"
  done
}
for part in $parts; do
  case $part in
    flops)
      for config in PixArt-XL-2-256 PixArt-XL-2-512 PixArt-XL-2-1024-MS; do
        for policy in none toca toca:ratio=0.2 toca:ratio=0.1 fora:interval=3; do
          "$bin" --config "$config" --flops-only --cache "$policy"
        done
      done ;;
    wall) wall 256; wall 512 ;;
    wall256) wall 256 ;;
    wall512) wall 512 ;;
    wall1024) wall 1024-MS ;;
    *) echo "unknown part '$part' (flops, wall, wall256, wall512, wall1024)" >&2; exit 1 ;;
  esac
done
