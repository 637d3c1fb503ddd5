#!/usr/bin/env bash
# Runs examples/sample_pixart like a user would, on the tiny PixArt models of tests/fixtures/pixart
# (a config JSON beside them gives their 8 caption tokens): an embeddings file this script writes
# byte by byte (safetensors needs no Python), both numerics, prompts through the tiny T5 of
# tests/fixtures/t5 and PNGs through the tiny SD VAE of tests/fixtures/vae, seeded runs repeat,
# initial noise, caching with a trace, --flops-only on the 1024-MS release (instant, and its cache
# memory equal to a real run's on the tiny model), and every bad input gets a clear message and
# exit code 1 without leaving files.
set -uo pipefail
bin=$1; fixtures=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

le32() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"; }
# safetensors FILE HEADER_JSON: writes the 8-byte header length and the padded header.
header() {
  local header=$2
  while [ $(( ${#header} % 8 )) -ne 0 ]; do header="$header "; done
  { le32 ${#header}; printf '\x00\x00\x00\x00'; printf '%s' "$header"; } >"$1"
}
f32s() { for ((i = 0; i < $1; i++)); do printf "$2"; done; }  # COUNT BYTES: a repeated float32
# embeddings FILE ROWS [negative]: 'y' [ROWS, 8, 32] F32 (0.5) and 'mask' [ROWS, 8] I64 (row 0: 5
# valid tokens, others 8); with "negative" also 'negative_y' [1, 8, 32] (0.25) and 'negative_mask' [1, 8] (EOS only).
embeddings() {
  local file=$1 rows=$2 neg=${3:-} y=$(( $2 * 8 * 32 * 4 )) m=$(( $2 * 8 * 8 ))
  local h="{\"y\":{\"dtype\":\"F32\",\"shape\":[$rows,8,32],\"data_offsets\":[0,$y]},\"mask\":{\"dtype\":\"I64\",\"shape\":[$rows,8],\"data_offsets\":[$y,$((y + m))]}"
  [ -n "$neg" ] && h="$h,\"negative_y\":{\"dtype\":\"F32\",\"shape\":[1,8,32],\"data_offsets\":[$((y + m)),$((y + m + 1024))]},\"negative_mask\":{\"dtype\":\"I64\",\"shape\":[1,8],\"data_offsets\":[$((y + m + 1024)),$((y + m + 1088))]}"
  header "$file" "$h}"
  {
    f32s $((rows * 256)) '\x00\x00\x00\x3f'
    for ((r = 0; r < rows; r++)); do
      for ((k = 0; k < 8; k++)); do
        if [ "$r" -eq 0 ] && [ "$k" -ge 5 ]; then printf '\x00\x00\x00\x00\x00\x00\x00\x00'; else printf '\x01\x00\x00\x00\x00\x00\x00\x00'; fi
      done
    done
    if [ -n "$neg" ]; then
      f32s 256 '\x00\x00\x80\x3e'
      printf '\x01\x00\x00\x00\x00\x00\x00\x00'
      for ((k = 1; k < 8; k++)); do printf '\x00\x00\x00\x00\x00\x00\x00\x00'; done
    fi
  } >>"$file"
}
embeddings "$work/e2.st" 2
embeddings "$work/e2n.st" 2 negative
# noise FILE: 'noise' [2, 4, 8, 8] F32, all 0.1.
header "$work/noise.st" '{"noise":{"dtype":"F32","shape":[2,4,8,8],"data_offsets":[0,2048]}}'
f32s 512 '\xcd\xcc\xcc\x3d' >>"$work/noise.st"

px=$fixtures/pixart
for v in base ms; do
  sed 's/^{/{"model_max_length": 8,/' "$px/pixart_tiny_${v}_config.json" >"$work/$v.json"
done
orig=(--weights "$px/pixart_tiny_base_original.pth" --config "$work/base.json" --quiet)
diff=(--weights "$px/pixart_tiny_base_diffusers.safetensors" --config "$work/base.json" --numerics diffusers --quiet)
tiny=("${orig[@]}" --steps 3)

"$bin" "${tiny[@]}" --embeddings "$work/e2.st" --save-latents "$work/a.st" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "latents run"; }
[ -s "$work/a.st" ] || fail "no latents written"
grep -q "2 images of 64x64 px with custom (original numerics, 3 steps, guidance 4.5)" "$work/out.txt" || fail "summary: $(cat "$work/out.txt")"
"$bin" "${tiny[@]}" --embeddings "$work/e2.st" --save-latents "$work/b.st" >/dev/null 2>&1 || fail "second run"
cmp -s "$work/a.st" "$work/b.st" || fail "the same seed gave different latents"
"$bin" "${tiny[@]}" --embeddings "$work/e2.st" --seed 1 --save-latents "$work/c.st" >/dev/null 2>&1 || fail "seed 1 run"
cmp -s "$work/a.st" "$work/c.st" && fail "another seed gave the same latents"
# The initial noise replaces the seed's draw: two seeds, the same latents.
"$bin" "${tiny[@]}" --embeddings "$work/e2.st" --init-noise "$work/noise.st" --save-latents "$work/n1.st" >/dev/null 2>&1 || fail "init-noise run"
"$bin" "${tiny[@]}" --embeddings "$work/e2.st" --init-noise "$work/noise.st" --seed 5 --save-latents "$work/n2.st" >/dev/null 2>&1 || fail "init-noise rerun"
cmp -s "$work/n1.st" "$work/n2.st" || fail "--init-noise did not replace the seeded noise"
cmp -s "$work/n1.st" "$work/a.st" && fail "--init-noise had no effect"

# diffusers numerics from the diffusers file, with the negative prompt in the embeddings file.
"$bin" "${diff[@]}" --steps 3 --embeddings "$work/e2n.st" --save-latents "$work/d.st" >"$work/out.txt" 2>&1 \
  || { cat "$work/out.txt"; fail "diffusers run"; }
grep -q "diffusers numerics" "$work/out.txt" || fail "diffusers summary: $(cat "$work/out.txt")"
cmp -s "$work/a.st" "$work/d.st" && fail "the two numerics gave the same latents"

# Caching: FORA writes its trace, reuses, and the summary shows saved FLOPs.
"$bin" "${orig[@]}" --steps 6 --embeddings "$work/e2.st" --cache fora:interval=2 --trace "$work/trace.json" \
  --save-latents "$work/t.st" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "fora run"; }
grep -q "FLOPs speedup 2.00x), tokens recomputed 50.0%" "$work/out.txt" || fail "no cache saving in the summary: $(cat "$work/out.txt")"
grep -q '"reuse"' "$work/trace.json" || fail "the fora trace has no reused site"

# Prompts through the tiny T5 and images through the tiny VAE: one PNG per prompt; a prompt file
# works alike; the diffusers numerics encode the empty negative prompt themselves.
t5=(--t5 "$fixtures/t5/t5_tiny.safetensors")
vae=(--vae "$fixtures/vae/vae_tiny.safetensors" --vae-config "$fixtures/vae/config.json")
"$bin" "${tiny[@]}" "${t5[@]}" "${vae[@]}" --prompt "A red panda eating bamboo" --prompt "a cat --ar 3:4" \
  --output "$work/img.png" --save-latents "$work/p1.st" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "prompt run"; }
for i in 0 1; do
  [ "$(head -c 4 "$work/img_$i.png" | tail -c 3)" = "PNG" ] || fail "img_$i.png is not a PNG"
done
printf 'A red panda eating bamboo\n\na cat --ar 3:4\n' >"$work/prompts.txt"
"$bin" "${tiny[@]}" "${t5[@]}" --prompt-file "$work/prompts.txt" --save-latents "$work/p2.st" >/dev/null 2>&1 || fail "prompt-file run"
cmp -s "$work/p1.st" "$work/p2.st" || fail "--prompt-file gave other latents than the same --prompt's"
"$bin" "${diff[@]}" --steps 3 "${t5[@]}" "${vae[@]}" --prompt "a cat" --output "$work/cat.png" >"$work/out.txt" 2>&1 \
  || { cat "$work/out.txt"; fail "diffusers prompt run"; }
[ -s "$work/cat.png" ] || fail "no cat.png"

# MS model, a non-square size (micro-conditions from --height/--width).
"$bin" --config "$work/ms.json" --weights "$px/pixart_tiny_ms_original.pth" --quiet --steps 3 --embeddings "$work/e2.st" \
  --height 64 --width 96 --save-latents "$work/ms.st" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; fail "ms run"; }
grep -q "2 images of 64x96 px" "$work/out.txt" || fail "ms summary: $(cat "$work/out.txt")"

# --flops-only states the cache memory a real run keeps: the same number the real run reports.
"$bin" --config "$work/base.json" --random-weights --random-captions 1 --steps 6 --cache fora:interval=2 --quiet \
  --save-latents "$work/r.st" >"$work/real.txt" 2>&1 || { cat "$work/real.txt"; fail "random-captions run"; }
"$bin" --config "$work/base.json" --flops-only --steps 6 --cache fora:interval=2 >"$work/dry.txt" 2>&1 \
  || { cat "$work/dry.txt"; fail "tiny flops-only"; }
real_mib=$(sed -n 's/.*cache memory \([0-9.]*\) MiB.*/\1/p' "$work/real.txt")
dry_mib=$(sed -n 's/.*cache memory of a real run: \([0-9.]*\) MiB.*/\1/p' "$work/dry.txt")
[ -n "$real_mib" ] && [ "$real_mib" = "$dry_mib" ] || fail "cache memory: real run '$real_mib' MiB, --flops-only '$dry_mib' MiB"

# FLOPs only on the released 1024-MS architecture in its 9:16 bin: no weights, instant.
start=$(date +%s%N)
"$bin" --config PixArt-XL-2-1024-MS --flops-only --aspect-ratio 9:16 --cache fora:interval=3 >"$work/flops.txt" 2>&1 \
  || { cat "$work/flops.txt"; fail "flops-only run"; }
ms=$(( ($(date +%s%N) - start) / 1000000 ))
grep -q "20 steps, 768x1344 px (aspect-ratio bin 0.57) (latent 96x168), batch 2" "$work/flops.txt" || fail "flops-only: $(cat "$work/flops.txt")"
[ "$ms" -lt 5000 ] || fail "flops-only took $ms ms"

expect_error() {  # expect_error "fragment" args...
  local fragment=$1; shift
  "$bin" "$@" >"$work/err.txt" 2>&1
  local rc=$?
  [ $rc -eq 1 ] || fail "exit $rc (expected 1) for: $* -> $(cat "$work/err.txt")"
  grep -qF -- "$fragment" "$work/err.txt" || fail "message lacks '$fragment' for: $* -> $(cat "$work/err.txt")"
}
x=(--save-latents "$work/x.st")
expect_error "--prompt needs --t5" "${tiny[@]}" --prompt "a cat" "${x[@]}"
expect_error "--t5 $work/none: no such file or folder" "${tiny[@]}" --prompt "a cat" --t5 "$work/none" "${x[@]}"
expect_error "give one source of captions" "${tiny[@]}" --prompt "a cat" --embeddings "$work/e2.st" "${x[@]}"
expect_error "no captions: pass --prompt TEXT" "${tiny[@]}" "${x[@]}"
expect_error "--embeddings file '$work/none.st' does not exist" "${tiny[@]}" --embeddings "$work/none.st" "${x[@]}"
expect_error "--prompt-file '$work/none.txt' does not exist" "${tiny[@]}" --prompt-file "$work/none.txt" "${x[@]}"
: >"$work/empty.txt"
expect_error "holds no prompt" "${tiny[@]}" --prompt-file "$work/empty.txt" "${t5[@]}" "${x[@]}"
expect_error "needs the negative prompt's T5 output 'negative_y'" "${diff[@]}" --embeddings "$work/e2.st" "${x[@]}"
expect_error "is a diffusers checkpoint, which has none: use --numerics diffusers" \
  --weights "$px/pixart_tiny_base_diffusers.safetensors" --config "$work/base.json" --embeddings "$work/e2.st" "${x[@]}"
expect_error "numerics 'sd' is not known" "${tiny[@]}" --numerics sd --embeddings "$work/e2.st" "${x[@]}"
expect_error "steps must be >= 2" "${orig[@]}" --steps 1 --embeddings "$work/e2.st" "${x[@]}"
expect_error "--resolution 300: expected 256, 512 or 1024" --config PixArt-XL-2-1024-MS --flops-only --resolution 300
expect_error "--aspect-ratio 'wide': expected H:W" --config PixArt-XL-2-1024-MS --flops-only --aspect-ratio wide
expect_error "trains at 64 px: give --resolution 256, 512 or 1024, or --height and --width" "${tiny[@]}" --aspect-ratio 3:4 --embeddings "$work/e2.st" "${x[@]}"
expect_error "multiples of 16 pixels" "${tiny[@]}" --height 72 --width 64 --embeddings "$work/e2.st" "${x[@]}"
expect_error "--height and --width go together" "${tiny[@]}" --height 64 --embeddings "$work/e2.st" "${x[@]}"
expect_error "y must be floating point [n, 120, 4096]" --config PixArt-XL-2-512 --flops-only --embeddings "$work/e2.st"
expect_error "initial noise has shape [2, 4, 8, 8], expected floating point [1, 4, 8, 8]" --config "$work/base.json" \
  --random-weights --random-captions 1 --init-noise "$work/noise.st" "${x[@]}"
expect_error "nothing to write" "${tiny[@]}" --embeddings "$work/e2.st"
expect_error "--weights is required" --embeddings "$work/e2.st" "${x[@]}"
expect_error "--random-weights needs --config" --random-weights --embeddings "$work/e2.st" "${x[@]}"
expect_error "--weights file '$work/none.pth' does not exist" --weights "$work/none.pth" --embeddings "$work/e2.st" "${x[@]}"
expect_error "unknown cache policy 'magic'" "${tiny[@]}" --cache magic --embeddings "$work/e2.st" "${x[@]}"
expect_error "--dtype bf16 on the CPU" "${tiny[@]}" --dtype bf16 --embeddings "$work/e2.st" "${x[@]}"
expect_error "--output needs --vae" "${tiny[@]}" --embeddings "$work/e2.st" --output "$work/x.png" "${x[@]}"
expect_error "--output $work/x.jpg: expected a .png file" "${tiny[@]}" "${vae[@]}" --embeddings "$work/e2.st" --output "$work/x.jpg"
expect_error "the folder '$work/missing' does not exist" "${tiny[@]}" "${vae[@]}" --embeddings "$work/e2.st" --output "$work/missing/x.png"
expect_error "--vae file '$work/none.st' does not exist" "${tiny[@]}" --vae "$work/none.st" --embeddings "$work/e2.st" --output "$work/x.png"
expect_error "--init-noise $work/a.st: no tensor 'noise'" "${tiny[@]}" --embeddings "$work/e2.st" --init-noise "$work/a.st" "${x[@]}"
[ ! -e "$work/x.st" ] && [ ! -e "$work/x.png" ] && [ ! -e "$work/x.jpg" ] || fail "a failed run left an output file"
ls "$work" | grep -q "\.tmp" && fail "temporary files left: $(ls "$work")"
echo "sample_pixart checks passed"
