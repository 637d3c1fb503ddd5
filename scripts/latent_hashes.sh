#!/usr/bin/env bash
# Prints a SHA-256 of the final latents (and the FLOPs lines) of every documented command shape,
# run on tiny models so it takes a few minutes on a CPU: sample_dit / sample_pixart /
# sample_opensora with every built-in policy and sampler convention, their --flops-only forms on
# the released configs, and the demo (compare_cache on the embedded model, wall times removed).
# A behaviour-preserving refactor leaves every line unchanged:
#
#   bash scripts/latent_hashes.sh > before.txt; (refactor, rebuild); bash scripts/latent_hashes.sh > after.txt
#   diff before.txt after.txt
#
# Uses the build in DITCACHE_BUILD_DIR (default build/) and the fixtures in tests/fixtures.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DITCACHE_BUILD_DIR:-$root/build}
ex=$build/examples
fx=$root/tests/fixtures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=2

# The hash of a safetensors file's tensor bytes (its header holds metadata such as the weights' path).
data_hash() {
  local n
  n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
  tail -c +$((n + 9)) "$1" | sha256sum | cut -c1-16
}
# run NAME CMD...: runs CMD with --save-latents and prints NAME and the latents' hash (or its error).
run() {
  local name=$1; shift
  rm -f "$work/l.st"
  if "$@" --quiet --threads 2 --save-latents "$work/l.st" >"$work/out.txt" 2>&1 && [ -s "$work/l.st" ]; then
    printf '%-48s %s\n' "$name" "$(data_hash "$work/l.st")"
  else
    printf '%-48s FAILED: %s\n' "$name" "$(tail -1 "$work/out.txt")"
  fi
}
# flops NAME CMD...: the summary line(s) of a --flops-only run.
flops() {
  local name=$1; shift
  printf '%-48s %s\n' "$name" "$("$@" --flops-only 2>&1 | tr '\n' ' ' | sed 's/  */ /g')"
}

policies=("none" "toca" "fora:interval=3" "fora:interval=2,granularity=block" "fora:interval=2,granularity=step" "random:seed=3"
          "toca:mode=clean" "toca:ratio=0.3,interval=2")

# DiT: the tiny original and diffusers checkpoints, DDPM and DDIM, with and without guidance.
dit=(--weights "$fx/dit/dit_tiny_original.pt" --labels 1,3 --seed 7)
for p in "${policies[@]}"; do
  run "dit ddpm10 cfg4 $p" "$ex/sample_dit" "${dit[@]}" --sampler ddpm --steps 10 --cfg-scale 4 --cache "$p"
  run "dit ddim10 cfg1.5 $p" "$ex/sample_dit" "${dit[@]}" --sampler ddim --steps 10 --cfg-scale 1.5 --cache "$p"
done
run "dit ddim10 nocfg toca" "$ex/sample_dit" "${dit[@]}" --sampler ddim --steps 10 --cfg-scale 1 --cache toca
run "dit diffusers ddim10 toca" "$ex/sample_dit" --weights "$fx/dit/dit_tiny_diffusers.safetensors" --labels 2 --sampler ddim \
  --steps 10 --cfg-scale 1.5 --cache toca
run "dit respacing 10,5 eta0.5" "$ex/sample_dit" "${dit[@]}" --sampler ddim --respacing 15 --eta 0.5 --cfg-scale 2 --cache toca
flops "dit-xl flops toca ddim50" "$ex/sample_dit" --config DiT-XL/2 --cache toca --sampler ddim --steps 50 --labels 0 --cfg-scale 1.5
flops "dit-xl flops fora ddpm250" "$ex/sample_dit" --config DiT-XL/2 --cache fora:interval=3 --labels 0,1

# PixArt-α: the tiny base model in both conventions, the tiny MS model, random captions.
for v in base ms; do
  sed 's/^{/{"model_max_length": 8,/' "$fx/pixart/pixart_tiny_${v}_config.json" >"$work/$v.json"
done
px=(--config "$work/base.json" --random-weights --random-captions 2 --steps 8 --seed 3)
for p in "${policies[@]}"; do
  run "pixart original $p" "$ex/sample_pixart" "${px[@]}" --cache "$p"
  run "pixart diffusers $p" "$ex/sample_pixart" "${px[@]}" --numerics diffusers --cache "$p"
done
t5=(--t5 "$fx/t5/t5_tiny.safetensors" --prompt "A red panda eating bamboo" --prompt "a cat")
run "pixart weights original t5 toca" "$ex/sample_pixart" --weights "$fx/pixart/pixart_tiny_base_original.pth" --config "$work/base.json" \
  "${t5[@]}" --steps 8 --cache toca
run "pixart weights diffusers t5 fora" "$ex/sample_pixart" --weights "$fx/pixart/pixart_tiny_base_diffusers.safetensors" \
  --config "$work/base.json" --numerics diffusers "${t5[@]}" --steps 8 --cache fora:interval=2
run "pixart ms 64x128 toca" "$ex/sample_pixart" --config "$work/ms.json" --random-weights --random-captions 1 --steps 8 \
  --height 64 --width 128 --cache toca
flops "pixart-256 flops toca" "$ex/sample_pixart" --config PixArt-XL-2-256 --cache toca
flops "pixart-1024ms flops toca 9:16" "$ex/sample_pixart" --config PixArt-XL-2-1024-MS --aspect-ratio 9:16 --cache toca

# OpenSora: a tiny STDiT3, video and image, random captions.
printf '{"depth": 2, "hidden_size": 48, "num_heads": 2, "caption_channels": 32, "model_max_length": 8}' >"$work/os.json"
os=(--config "$work/os.json" --random-weights --random-captions 2 --height 32 --width 48 --steps 8 --seed 5)
for p in "${policies[@]}"; do
  run "opensora 17f $p" "$ex/sample_opensora" "${os[@]}" --frames 17 --cache "$p"
done
run "opensora 1f toca" "$ex/sample_opensora" "${os[@]}" --frames 1 --cache toca
flops "stdit3 flops toca 480p 51f" "$ex/sample_opensora" --config STDiT3-XL/2 --resolution 480p --aspect-ratio 9:16 --frames 51 \
  --cache toca

# The demo's command, fewer steps: everything it prints except wall times.
"$ex/compare_cache" --steps 10 --per-class 1 --threads 2 --quiet --output-dir "$work/demo" 2>&1 |
  sed -E 's/[0-9.]+ s,/<t> s,/g; s/wall speedup [0-9.]+x, //' | grep -v '^wrote' | sed 's/^/demo: /'
