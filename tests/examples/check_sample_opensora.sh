#!/usr/bin/env bash
# Runs examples/sample_opensora like a user would: a tiny random-weights STDiT3 (a JSON config)
# with an embeddings file this script writes byte by byte (safetensors needs no Python), latents
# and traces come out, seeded runs repeat, --flops-only on the released config is instant, and
# every bad input gets a clear message and exit code 1 without leaving files. With the shared
# fixtures (../shared/fixtures) it also decodes with the tiny OpenSora VAE into GIF, PNG frames
# and (FFmpeg builds) MP4.
set -uo pipefail
bin=$1; shared=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# embeddings FILE ROWS: 'y' [ROWS, 8, 32] F32 (all 0.5) and 'mask' [ROWS, 8] I64 (row 0: 5 valid tokens, others 8).
embeddings() {
  local file=$1 rows=$2 ybytes=$(( $2 * 8 * 32 * 4 )) mbytes=$(( $2 * 8 * 8 ))
  local header="{\"y\":{\"dtype\":\"F32\",\"shape\":[$rows,8,32],\"data_offsets\":[0,$ybytes]},\"mask\":{\"dtype\":\"I64\",\"shape\":[$rows,8],\"data_offsets\":[$ybytes,$((ybytes + mbytes))]}}"
  while [ $(( ${#header} % 8 )) -ne 0 ]; do header="$header "; done
  local n=${#header}
  {
    printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((n & 255)) $(((n >> 8) & 255)) $(((n >> 16) & 255)) $(((n >> 24) & 255)))\\x00\\x00\\x00\\x00"
    printf '%s' "$header"
    for ((i = 0; i < rows * 8 * 32; i++)); do printf '\x00\x00\x00\x3f'; done
    for ((r = 0; r < rows; r++)); do
      for ((k = 0; k < 8; k++)); do
        if [ "$r" -eq 0 ] && [ "$k" -ge 5 ]; then printf '\x00\x00\x00\x00\x00\x00\x00\x00'; else printf '\x01\x00\x00\x00\x00\x00\x00\x00'; fi
      done
    done
  } >"$file"
}
embeddings "$work/e2.st" 2
embeddings "$work/e1.st" 1
printf '{"depth": 1, "hidden_size": 48, "num_heads": 2, "caption_channels": 32, "model_max_length": 8}' >"$work/tiny.json"
base=(--config "$work/tiny.json" --random-weights --height 32 --width 48 --frames 17 --quiet)
tiny=("${base[@]}" --steps 3)

"$bin" "${tiny[@]}" --embeddings "$work/e2.st" --save-latents "$work/a.st" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "latents run"; }
[ -s "$work/a.st" ] || fail "no latents written"
grep -q "2 videos of 32x48 px, 17 frames" "$work/out.txt" || fail "summary line: $(cat "$work/out.txt")"
"$bin" "${tiny[@]}" --embeddings "$work/e2.st" --save-latents "$work/b.st" >/dev/null 2>&1 || fail "second run"
cmp -s "$work/a.st" "$work/b.st" || fail "the same seed gave different latents"
"$bin" "${tiny[@]}" --embeddings "$work/e2.st" --seed 1 --save-latents "$work/c.st" >/dev/null 2>&1 || fail "seed 1 run"
cmp -s "$work/a.st" "$work/c.st" && fail "another seed gave the same latents"

# Caching: ToCa writes its trace and the summary shows saved FLOPs.
"$bin" "${base[@]}" --steps 6 --embeddings "$work/e2.st" --cache toca --trace "$work/trace.json" \
  --save-latents "$work/t.st" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "toca run"; }
grep -q "FLOPs speedup" "$work/out.txt" || fail "no cache summary: $(cat "$work/out.txt")"
grep -q '"partial"' "$work/trace.json" || fail "the toca trace has no partial site"

# Prompts through the native T5 encoder (the tiny T5 and tokenizer of tests/fixtures/t5): one video
# per prompt, seeded runs repeat, another prompt changes the result, a reduced-precision cache runs.
t5=$(cd "$(dirname "$0")/../fixtures/t5" && pwd)
printf '{"depth": 1, "hidden_size": 48, "num_heads": 2, "caption_channels": 32, "model_max_length": 300}' >"$work/tiny300.json"
text_base=(--config "$work/tiny300.json" --random-weights --height 32 --width 48 --frames 17 --quiet --t5 "$t5/t5_tiny.safetensors")
text=("${text_base[@]}" --steps 3)
"$bin" "${text[@]}" --prompt "A red panda eating bamboo" --prompt "a cat" --save-latents "$work/p1.st" >"$work/out.txt" 2>&1 \
  || { cat "$work/out.txt"; fail "prompt run"; }
grep -q "2 videos of 32x48 px" "$work/out.txt" || fail "prompt summary: $(cat "$work/out.txt")"
"$bin" "${text[@]}" --prompt "A red panda eating bamboo" --prompt "a cat" --save-latents "$work/p2.st" >/dev/null 2>&1 || fail "prompt rerun"
cmp -s "$work/p1.st" "$work/p2.st" || fail "the same prompts gave different latents"
"$bin" "${text[@]}" --prompt "a blue whale" --prompt "a cat" --save-latents "$work/p3.st" >/dev/null 2>&1 || fail "other prompt"
cmp -s "$work/p1.st" "$work/p3.st" && fail "another prompt gave the same latents"
"$bin" "${text_base[@]}" --steps 6 --prompt "a cat" --cache toca --cache-dtype bf16 --save-latents "$work/p4.st" >"$work/out.txt" 2>&1 \
  || { cat "$work/out.txt"; fail "bf16 cache run"; }
grep -q "tokens recomputed 62.6%" "$work/out.txt" || fail "the bf16-cache ToCa run did not reuse: $(cat "$work/out.txt")"

# --flops-only states the cache memory a real run keeps: the same number the real run reports.
"$bin" "${base[@]}" --steps 6 --random-captions 1 --cache toca --save-latents "$work/r.st" >"$work/real.txt" 2>&1 \
  || { cat "$work/real.txt"; fail "random-captions run"; }
"$bin" --config "$work/tiny.json" --flops-only --height 32 --width 48 --frames 17 --steps 6 --cache toca >"$work/dry.txt" 2>&1 \
  || { cat "$work/dry.txt"; fail "tiny flops-only"; }
real_mib=$(sed -n 's/.*cache memory \([0-9.]*\) MiB.*/\1/p' "$work/real.txt")
dry_mib=$(sed -n 's/.*cache memory of a real run: \([0-9.]*\) MiB.*/\1/p' "$work/dry.txt")
[ -n "$real_mib" ] && [ "$real_mib" = "$dry_mib" ] || fail "cache memory: real run '$real_mib' MiB, --flops-only '$dry_mib' MiB"

# FLOPs only on the released architecture at 480p 9:16, 51 frames: no weights, instant.
start=$(date +%s%N)
"$bin" --config STDiT3-XL/2 --flops-only --resolution 480p --aspect-ratio 9:16 --frames 51 --cache toca \
  >"$work/flops.txt" 2>&1 || { cat "$work/flops.txt"; fail "flops-only run"; }
ms=$(( ($(date +%s%N) - start) / 1000000 ))
grep -q "480x854 px, 51 frames (latent 15x60x106), batch 2" "$work/flops.txt" || fail "flops-only: $(cat "$work/flops.txt")"
[ "$ms" -lt 5000 ] || fail "flops-only took $ms ms"

expect_error() {  # expect_error "fragment" args...
  local fragment=$1; shift
  "$bin" "$@" >"$work/err.txt" 2>&1
  local rc=$?
  [ $rc -eq 1 ] || fail "exit $rc (expected 1) for: $* -> $(cat "$work/err.txt")"
  grep -qF -- "$fragment" "$work/err.txt" || fail "message lacks '$fragment' for: $* -> $(cat "$work/err.txt")"
}
expect_error "--prompt needs --t5" "${tiny[@]}" --prompt "a cat" --save-latents "$work/x.st"
expect_error "--t5 $work/none: no such file or folder" "${tiny[@]}" --prompt "a cat" --t5 "$work/none" --save-latents "$work/x.st"
expect_error "give one source of captions" "${tiny[@]}" --prompt "a cat" --embeddings "$work/e1.st" --save-latents "$work/x.st"
expect_error "--cache-dtype 'int8'" "${tiny[@]}" --embeddings "$work/e1.st" --cache-dtype int8 --save-latents "$work/x.st"
expect_error "no captions: pass --prompt TEXT with --t5, or --embeddings" "${tiny[@]}" --save-latents "$work/x.st"
expect_error "--embeddings file '$work/none.st' does not exist" "${tiny[@]}" --embeddings "$work/none.st" --save-latents "$work/x.st"
expect_error "--resolution '1080p' is not known" --config STDiT3-XL/2 --flops-only --resolution 1080p
expect_error "--aspect-ratio '7:5' is not known" --config STDiT3-XL/2 --flops-only --aspect-ratio 7:5
expect_error "num_frames must be 1 (an image) or >= 17" --config "$work/tiny.json" --random-weights --height 32 --width 48 --frames 5 --embeddings "$work/e2.st" --save-latents "$work/x.st"
expect_error "y must be floating point [n, 300, 4096]" --config STDiT3-XL/2 --flops-only --embeddings "$work/e2.st"
expect_error "nothing to write" "${tiny[@]}" --embeddings "$work/e2.st"
expect_error "--weights is required" --embeddings "$work/e2.st" --save-latents "$work/x.st"
expect_error "--random-weights needs --config" --random-weights --embeddings "$work/e2.st" --save-latents "$work/x.st"
expect_error "--weights file '$work/none.st' does not exist" --weights "$work/none.st" --embeddings "$work/e2.st" --save-latents "$work/x.st"
expect_error "unknown cache policy 'magic'" "${tiny[@]}" --cache magic --embeddings "$work/e2.st" --save-latents "$work/x.st"
expect_error "--dtype bf16 on the CPU" "${tiny[@]}" --dtype bf16 --embeddings "$work/e2.st" --save-latents "$work/x.st"
expect_error "--output needs --vae" "${tiny[@]}" --embeddings "$work/e2.st" --output "$work/x.gif" --save-latents "$work/x.st"
[ ! -e "$work/x.st" ] && [ ! -e "$work/x.gif" ] || fail "a failed run left an output file"

vae=$shared/opensora/vae_tiny_weights.safetensors
if [ -z "$shared" ] || [ ! -f "$vae" ]; then
  echo "sample_opensora checks passed (VAE decoding skipped: no shared fixtures at '$shared')"
  exit 0
fi
expect_error "'.avi' is not a supported format" "${tiny[@]}" --embeddings "$work/e1.st" --vae "$vae" --output "$work/x.avi"
expect_error "the folder '$work/missing' does not exist" "${tiny[@]}" --embeddings "$work/e1.st" --vae "$vae" --output "$work/missing/v.gif"
"$bin" "${tiny[@]}" --embeddings "$work/e1.st" --vae "$vae" --output "$work/v.gif" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "gif run"; }
[ "$(head -c 6 "$work/v.gif")" = "GIF89a" ] || fail "v.gif is not a GIF"
"$bin" "${tiny[@]}" --embeddings "$work/e1.st" --vae "$vae" --output "$work/frames" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "png run"; }
[ "$(ls "$work/frames" | grep -c '^frame_00[01][0-9].png$')" -eq 17 ] || fail "expected 17 PNG frames: $(ls "$work/frames")"
if "$bin" "${tiny[@]}" --embeddings "$work/e1.st" --vae "$vae" --output "$work/v.mp4" >"$work/out.txt" 2>&1; then
  [ "$(head -c 8 "$work/v.mp4" | tail -c 4)" = "ftyp" ] || fail "v.mp4 does not start with an ftyp box"
else
  grep -q "built without FFmpeg" "$work/out.txt" || fail "mp4 run: $(cat "$work/out.txt")"
  [ ! -e "$work/v.mp4" ] || fail "a failed mp4 run left a file"
fi
ls "$work" | grep -q "\.tmp" && fail "temporary files left: $(ls "$work")"
echo "sample_opensora checks passed"
