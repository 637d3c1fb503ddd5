#!/usr/bin/env bash
# The main job: sets up and builds ditcache, then samples class-conditional images with the DiT
# sampler on the project's tiny DiT and VAE (random weights until the trained embedded model lands),
# uncached and with ToCa, writing out/demo_none.png, out/demo_toca.png and their latents, and
# printing each run's FLOPs, FLOPs speedup and share of tokens recomputed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DITCACHE_BUILD_DIR:-$root/build}
bash "$root/scripts/setup.sh"
mkdir -p "$root/out"
fixtures=$root/tests/fixtures
for policy in none toca:ratio=0.3,interval=3; do
  name=${policy%%:*}
  "$build/examples/sample_dit" --weights "$fixtures/dit/dit_tiny_original.pt" \
    --vae "$fixtures/vae/vae_tiny.safetensors" --vae-config "$fixtures/vae/config.json" \
    --labels 0,1,2,3,4,5,6,7,8,9 --sampler ddim --steps 50 --cfg-scale 4 --seed 0 --cache "$policy" --quiet \
    --output "$root/out/demo_$name.png" --save-latents "$root/out/demo_${name}_latents.safetensors" "$@"
done
