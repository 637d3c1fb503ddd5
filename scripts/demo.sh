#!/usr/bin/env bash
# The main job: sets up and builds ditcache, then samples class-conditional images with the DiT
# sampler on the project's tiny DiT and VAE (random weights until the trained embedded model lands),
# writing out/demo.png and out/demo_latents.safetensors.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DITCACHE_BUILD_DIR:-$root/build}
bash "$root/scripts/setup.sh"
mkdir -p "$root/out"
fixtures=$root/tests/fixtures
"$build/examples/sample_dit" --weights "$fixtures/dit/dit_tiny_original.pt" \
  --vae "$fixtures/vae/vae_tiny.safetensors" --vae-config "$fixtures/vae/config.json" \
  --labels 0,1,2,3,4,5,6,7,8,9 --steps 50 --cfg-scale 4 --seed 0 \
  --output "$root/out/demo.png" --save-latents "$root/out/demo_latents.safetensors" "$@"
