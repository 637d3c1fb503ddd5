#!/usr/bin/env bash
# The OpenSora 1.2 numbers of docs/benchmarks.md: FLOPs and cache memory of the released
# STDiT3-XL/2 at 480p 9:16, 51 frames (--flops-only: no weights, milliseconds), then wall time on
# this machine at a reduced size (144p 9:16, 17 frames, random weights, one caption + CFG, 30 rflow
# steps) per policy. The wall runs take ~30 minutes on a 2-vCPU machine; pass "flops" or "wall" to
# run one part. "wall480" times the paper's setting (480p 9:16, 51 frames) on a GPU:
# DITCACHE_DEVICE=cuda DITCACHE_DTYPE=bf16 (runs then start with an untimed 2-step warm-up).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${DITCACHE_BUILD_DIR:-$root/build}/examples/sample_opensora
threads=${DITCACHE_THREADS:-2}
device=${DITCACHE_DEVICE:-cpu}
dtype=${DITCACHE_DTYPE:-fp32}
warm=()
[ "$device" != cpu ] && warm=(--warmup)
parts=${*:-flops wall}
out=$root/out/bench/opensora
mkdir -p "$out"
for part in $parts; do
  case $part in
    flops)
      for policy in none toca fora:interval=3 "toca --cache-dtype bf16"; do
        # shellcheck disable=SC2086
        "$bin" --config STDiT3-XL/2 --flops-only --resolution 480p --aspect-ratio 9:16 --frames 51 --cache $policy
      done ;;
    wall)
      for policy in none toca fora:interval=3; do
        OMP_WAIT_POLICY=PASSIVE "$bin" --config STDiT3-XL/2 --random-weights --random-captions 1 --resolution 144p \
          --aspect-ratio 9:16 --frames 17 --steps 30 --threads "$threads" --device "$device" --dtype "$dtype" --quiet \
          --cache "$policy" "${warm[@]}" --save-latents "$out/latents-${policy%%:*}.safetensors"
      done ;;
    wall480)
      for policy in none toca fora:interval=3; do
        "$bin" --config STDiT3-XL/2 --random-weights --random-captions 1 --resolution 480p --aspect-ratio 9:16 \
          --frames 51 --steps 30 --device "$device" --dtype "$dtype" --quiet --cache "$policy" "${warm[@]}" \
          --save-latents "$out/latents-480p-$device-${policy%%:*}.safetensors"
      done ;;
    *) echo "unknown part '$part' (flops, wall, wall480)" >&2; exit 1 ;;
  esac
done
