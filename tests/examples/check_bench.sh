#!/usr/bin/env bash
# Runs ditcache-bench and compare_cache on the embedded shapes10 model like a user would: every
# output file appears, the table has its columns, and bad input fails clearly, leaving no files.
set -uo pipefail
bench=$1; compare=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$bench" -s 3 -b 2 -r 1 -p "none;toca:ratio=0.3|0.5,interval=2" -o "$work/b" -q >"$work/table.md" 2>"$work/err.txt" \
  || { cat "$work/err.txt"; fail "bench run"; }
for f in bench.md bench.csv bench.json speedup_fidelity_shapes10.png \
         heatmap_shapes10_toca-ratio-0.3-interval-2_s3_b2_cpu.png heatmap_shapes10_toca-ratio-0.5-interval-2_s3_b2_cpu.png; do
  [ -s "$work/b/$f" ] || fail "ditcache-bench did not write $f: $(ls "$work/b")"
done
grep -q "^| model | device | policy | steps | batch | wall ms |" "$work/table.md" || fail "no table header: $(cat "$work/table.md")"
[ "$(grep -c '^| shapes10 | cpu |' "$work/table.md")" = 3 ] || fail "expected 3 rows: $(cat "$work/table.md")"
[ "$(wc -l < "$work/b/bench.csv")" = 4 ] || fail "bench.csv should have a header and 3 rows"

# Only uncached rows: the tables are written, no speedup plot (nothing to plot), exit 0.
"$bench" -s 2,3 -b 1 -r 1 -p none -o "$work/n" -q >/dev/null 2>"$work/err.txt" || { cat "$work/err.txt"; fail "none-only grid"; }
[ "$(wc -l < "$work/n/bench.csv")" = 3 ] || fail "none-only grid: expected 2 rows"
[ ! -e "$work/n/speedup_fidelity_shapes10.png" ] || fail "a plot without cached rows"

# Bad input: a clear message, exit code 1, no result files.
"$bench" -p "none;tocca" -o "$work/bad" -q >/dev/null 2>"$work/err.txt" && fail "unknown policy accepted"
grep -q "tocca" "$work/err.txt" || fail "error does not name the policy: $(cat "$work/err.txt")"
[ ! -e "$work/bad/bench.csv" ] || fail "a failed run left bench.csv behind"
"$bench" -s 0 -q -o "$work/bad" >/dev/null 2>"$work/err.txt" && fail "zero steps accepted"
grep -q "step count 0" "$work/err.txt" || fail "error does not name the step count: $(cat "$work/err.txt")"

# The main job's comparison program.
"$compare" --steps 5 --per-class 1 --threads 2 --output-dir "$work/c" --quiet >"$work/out.txt" 2>&1 \
  || { cat "$work/out.txt"; fail "compare_cache run"; }
for f in uncached.png cached.png side_by_side.png; do [ -s "$work/c/$f" ] || fail "compare_cache did not write $f"; done
grep -q "wall speedup .* FLOPs speedup .* PSNR .* SSIM" "$work/out.txt" || fail "no comparison line: $(cat "$work/out.txt")"
grep -q "class accuracy" "$work/out.txt" || fail "no accuracy line: $(cat "$work/out.txt")"
"$compare" --cache "toca:ratio=2" --steps 5 --output-dir "$work/bad2" >/dev/null 2>"$work/err.txt" && fail "bad ratio accepted"
grep -q "ratio" "$work/err.txt" || fail "error does not name the option: $(cat "$work/err.txt")"
[ ! -e "$work/bad2/uncached.png" ] || fail "a bad policy left images behind"
"$compare" --classifier "$work/missing.safetensors" --steps 5 --output-dir "$work/bad3" >/dev/null 2>"$work/err.txt" \
  && fail "missing classifier accepted"
grep -q "missing.safetensors" "$work/err.txt" || fail "error does not name the classifier: $(cat "$work/err.txt")"
[ ! -e "$work/bad3/uncached.png" ] || fail "a missing classifier left images behind"
echo "ok"
