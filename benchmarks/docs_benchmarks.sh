#!/usr/bin/env bash
# The ditcache-bench runs behind docs/benchmarks.md, in the order they appear there. Results go to
# out/bench/<name>/ (table, CSV, JSON, plots). Takes ~20 minutes on a 2-vCPU machine; pass a subset
# of names (embedded sweep xl2) to run only those.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${DITCACHE_BUILD_DIR:-$root/build}/benchmarks/ditcache-bench
threads=${DITCACHE_THREADS:-2}
runs=${*:-embedded sweep xl2}
for run in $runs; do
  out=$root/out/bench/$run
  case $run in
    embedded)  # the embedded shapes10 DiT, paper defaults, quality of 200 samples per policy
      "$bench" --threads "$threads" -s 50 -b 10 -r 3 --quality 200 -o "$out" ;;
    sweep)     # ratio and interval sweeps (the paper defaults are in 'embedded'), 100 samples per row
      "$bench" --threads "$threads" -s 50 -b 10 -r 1 --quality 100 -o "$out" \
        -p "none;toca:ratio=0.03|0.15|0.3;toca:interval=5;fora:interval=2|4|6" ;;
    xl2)       # DiT-XL/2 architecture, random weights: speed and memory only (DDIM-20, one label + CFG 1.5)
      "$bench" --threads "$threads" -m DiT-XL/2 --random-weights --cfg-scale 1.5 -s 20 -b 1 -r 1 --warmup 0 -o "$out" \
        -p "none;fora:interval=3;toca;random" ;;
    *) echo "unknown run '$run' (embedded, sweep, xl2)" >&2; exit 1 ;;
  esac
done
