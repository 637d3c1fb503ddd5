#!/usr/bin/env bash
# Runs examples/sample_dit on the tiny fixtures like a user would: a PNG and latents come out,
# --init-noise reproduces a seeded run, and every bad input gets a clear message and exit code 1.
set -uo pipefail
bin=$1; fixtures=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
dit=$fixtures/dit/dit_tiny_original.pt
vae=(--vae "$fixtures/vae/vae_tiny.safetensors" --vae-config "$fixtures/vae/config.json")

"$bin" --weights "$dit" "${vae[@]}" --labels 1,7 --steps 10 --seed 3 --quiet \
  --output "$work/a.png" --save-latents "$work/a.safetensors" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "sampling run"; }
[ -s "$work/a.png" ] || fail "no PNG written"
[ -s "$work/a.safetensors" ] || fail "no latents written"
grep -q "2 images" "$work/out.txt" || fail "summary line missing: $(cat "$work/out.txt")"

# The diffusers-format file with DDIM runs too.
"$bin" --weights "$fixtures/dit/dit_tiny_diffusers.safetensors" --numerics diffusers --sampler ddim --steps 5 \
  --image-size 64 --labels 2 --quiet --save-latents "$work/d.safetensors" >/dev/null 2>&1 || fail "diffusers ddim run"

# Caching: a ToCa run writes its trace and prints the cache summary.
"$bin" --weights "$dit" --labels 1,7 --sampler ddim --steps 10 --quiet --cache toca:ratio=0.3,interval=3 \
  --trace "$work/trace.json" --save-latents "$work/t.safetensors" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "toca run"; }
grep -q "FLOPs speedup" "$work/out.txt" || fail "no cache summary: $(cat "$work/out.txt")"
python3 - "$work/trace.json" <<'PY' 2>/dev/null || grep -q '"action":"partial"' "$work/trace.json" || fail "trace has no partial site"
import json, sys
t = json.load(open(sys.argv[1]))
assert len(t["steps"]) == 10 and any(s["action"] == "partial" and "indices" in s for st in t["steps"] for s in st["sites"])
PY
# FLOPs only, on the real-size architecture, without weights: the paper's 10.23 TFLOPs.
"$bin" --config DiT-XL/2 --flops-only --cache toca:ratio=0.07,interval=3,schedule=ddim50 --sampler ddim --steps 50 \
  --labels 0 --cfg-scale 1.5 >"$work/flops.txt" 2>&1 || { cat "$work/flops.txt"; fail "flops-only run"; }
grep -q "10.232 TFLOPs of 23.735 uncached, FLOPs speedup 2.32x" "$work/flops.txt" || fail "flops-only: $(cat "$work/flops.txt")"

printf '{"depth": 2, "hidden_size": 64, "num_heads": 4, "patch_size": 2, "input_size": 8, "num_classes": 10}' >"$work/tiny.json"
expect_error() {  # expect_error "fragment" args...
  local fragment=$1; shift
  "$bin" "$@" >"$work/err.txt" 2>&1
  local rc=$?
  [ $rc -ne 0 ] || fail "exit 0 for: $*"
  grep -qF -- "$fragment" "$work/err.txt" || fail "message lacks '$fragment' for: $* -> $(cat "$work/err.txt")"
}
expect_error "--weights file '$work/none.pt' does not exist" --weights "$work/none.pt" --save-latents "$work/x.st"
expect_error "class label 12 is out of range" --weights "$dit" --labels 12 --save-latents "$work/x.st" --steps 2 --quiet
expect_error "--dtype fp16 on the CPU" --weights "$dit" --dtype fp16 --save-latents "$work/x.st"
expect_error "sampler 'euler' is not known" --weights "$dit" --sampler euler --save-latents "$work/x.st"
expect_error "hidden_size: expected 1152, found 64" --weights "$dit" --config DiT-XL/2 --save-latents "$work/x.st"
expect_error "pos_embed" --weights "$dit" --image-size 256 --save-latents "$work/x.st"
expect_error "--image-size 256: the model" --weights "$dit" --config "$work/tiny.json" --image-size 256 --save-latents "$work/x.st"
expect_error "nothing to write" --weights "$dit"
expect_error "--weights is required" --save-latents "$work/x.st"
expect_error "unknown cache policy 'magic'" --weights "$dit" --cache magic --save-latents "$work/x.st"
expect_error "toca: option ratio=2 is out of range" --weights "$dit" --cache toca:ratio=2 --save-latents "$work/x.st"
expect_error "not a DiT checkpoint" --weights "$fixtures/vae/vae_tiny.safetensors" --save-latents "$work/x.st"
printf 'not a weight file at all' >"$work/junk.pt"
expect_error "$work/junk.pt" --weights "$work/junk.pt" --save-latents "$work/x.st"
[ ! -e "$work/x.st" ] || fail "a failed run left an output file"
echo "sample_dit checks passed"
