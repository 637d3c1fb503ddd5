#!/usr/bin/env bash
# Runs train_shapes as a user would, on a one-block DiT for a few steps: a run resumed from its
# checkpoint ends with the same weights as an uninterrupted one, a checkpoint of another run is
# refused by name, every subcommand writes its file, and bad options fail clearly without output.
set -uo pipefail
train=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cat >"$work/tiny.json" <<'JSON'
{"name": "DiT-shapes10-tiny", "depth": 1, "hidden_size": 32, "num_heads": 2, "patch_size": 2, "input_size": 32,
 "in_channels": 3, "learn_sigma": true, "num_classes": 10, "mlp_ratio": 2.0}
JSON
dit() { "$train" dit --config "$work/tiny.json" --batch 2 --warmup 10 --threads 1 "$@"; }

# Uninterrupted: 6 steps. Interrupted: 3 steps, then resumed to 6. Inside the warm-up the learning
# rate does not depend on the run's length, so both must end bit for bit equal.
dit --steps 6 --output "$work/a.safetensors" 2>"$work/err.txt" || { cat "$work/err.txt"; fail "6-step run"; }
[ -s "$work/a.safetensors" ] && [ -s "$work/a.safetensors.ckpt" ] || fail "no weights or checkpoint: $(ls "$work")"
[ "$(wc -l < "$work/a.safetensors.loss.csv")" = 2 ] || fail "loss log: $(cat "$work/a.safetensors.loss.csv")"
dit --steps 3 --output "$work/b.safetensors" 2>"$work/err.txt" || { cat "$work/err.txt"; fail "3-step run"; }
dit --steps 6 --output "$work/b.safetensors" --resume 2>"$work/err.txt" || { cat "$work/err.txt"; fail "resumed run"; }
grep -q "resumed dit from .* at step 3" "$work/err.txt" || fail "no resume message: $(cat "$work/err.txt")"
for run in a b; do
  "$train" export --config "$work/tiny.json" --checkpoint "$work/$run.safetensors.ckpt" --output "$work/$run-ema.safetensors" \
    2>"$work/err.txt" || { cat "$work/err.txt"; fail "export $run"; }
done
cmp -s "$work/a-ema.safetensors" "$work/b-ema.safetensors" || fail "the resumed run's EMA differs from the uninterrupted run's"
"$train" export --config "$work/tiny.json" --checkpoint "$work/a.safetensors.ckpt" --weights model \
  --output "$work/a-model.safetensors" 2>/dev/null || fail "export --weights model"
cmp -s "$work/a-ema.safetensors" "$work/a-model.safetensors" && fail "the EMA equals the raw weights after 6 steps"

# A checkpoint written with other stream or EMA settings is refused, naming what differs.
for flags in "--batch 3" "--batch 2 --ema-warmup" "--batch 2 --ema 0.99"; do
  # shellcheck disable=SC2086
  "$train" dit --config "$work/tiny.json" $flags --warmup 10 --threads 1 --steps 8 --output "$work/b.safetensors" \
    --resume >/dev/null 2>"$work/err.txt" && fail "resume with $flags accepted"
  grep -q "batch, seed, data seed, lr, ema, ema-warmup = 2, 0, 1, 0.001, 0.999, 0; this run has" "$work/err.txt" \
    || fail "resume with $flags: $(cat "$work/err.txt")"
done
sed 's/"hidden_size": 32/"hidden_size": 48/' "$work/tiny.json" >"$work/wide.json"
"$train" dit --config "$work/wide.json" --batch 2 --warmup 10 --threads 1 --steps 8 --output "$work/b.safetensors" \
  --resume >/dev/null 2>"$work/err.txt" && fail "resume with another architecture accepted"
grep -q "holds another architecture (another --config?): model .* the config.s is \\[48" "$work/err.txt" \
  || fail "resume, other config: $(cat "$work/err.txt")"
"$train" export --config "$work/wide.json" --checkpoint "$work/a.safetensors.ckpt" --output "$work/wide.safetensors" \
  >/dev/null 2>"$work/err.txt" && fail "export with another architecture accepted"
grep -q "holds another architecture" "$work/err.txt" || fail "export, other config: $(cat "$work/err.txt")"
[ ! -e "$work/wide.safetensors" ] || fail "a refused export left weights behind"
"$train" dit --config "$work/tiny.json" --batch 2 --warmup 120 --threads 1 --steps 8 --time-budget 60 \
  --output "$work/b.safetensors" --resume >/dev/null 2>"$work/err.txt" \
  && fail "--time-budget with --resume accepted"
grep -q "time-budget with --resume" "$work/err.txt" || fail "budget + resume: $(cat "$work/err.txt")"

# Bad options and inputs: exit 1, the option or file named, nothing written.
check_refused() {  # name, expected message, args...
  local name=$1 message=$2; shift 2
  "$train" "$@" >/dev/null 2>"$work/err.txt" && fail "$name accepted"
  grep -q -- "$message" "$work/err.txt" || fail "$name: expected '$message', got: $(cat "$work/err.txt")"
  ! compgen -G "$work/bad*" >/dev/null || fail "$name left files behind: $(ls "$work"/bad*)"
}
check_refused "class dropout 1" "--class-dropout 1: expected \[0, 1)" \
  dit --config "$work/tiny.json" --class-dropout 1 --output "$work/bad.safetensors"
check_refused "the reference stream" "that is the held-out reference stream" \
  dit --config "$work/tiny.json" --data-seed 1592651789 --output "$work/bad.safetensors"
check_refused "zero steps" "bad training options: steps 0" \
  dit --config "$work/tiny.json" --steps 0 --output "$work/bad.safetensors"
sed 's/"in_channels": 3/"in_channels": 4/' "$work/tiny.json" >"$work/latent.json"
check_refused "a latent config" "shapes10 needs in_channels 3" \
  dit --config "$work/latent.json" --output "$work/bad.safetensors"
check_refused "missing init weights" "missing.safetensors" \
  dit --config "$work/tiny.json" --init-weights "$work/missing.safetensors" --output "$work/bad.safetensors"
check_refused "a foreign checkpoint" "checkpoint '$work/a.safetensors.loss.csv' is not a train_shapes checkpoint" \
  export --config "$work/tiny.json" --checkpoint "$work/a.safetensors.loss.csv" --output "$work/bad.safetensors"

# The other subcommands.
"$train" classifier --steps 3 --batch 4 --warmup 2 --width 4 --threads 1 --output "$work/cls.safetensors" \
  >/dev/null 2>"$work/err.txt" || { cat "$work/err.txt"; fail "classifier run"; }
grep -q "held-out accuracy" "$work/err.txt" || fail "classifier: no accuracy: $(cat "$work/err.txt")"
"$train" dataset --output "$work/data.png" 2>/dev/null && [ -s "$work/data.png" ] || fail "dataset grid"
"$train" plot-loss --log "$work/a.safetensors.loss.csv" --output "$work/loss.png" >/dev/null 2>"$work/err.txt" \
  && fail "a 1-point loss log plotted"
grep -q "fewer than 3 logged points" "$work/err.txt" || fail "plot-loss: $(cat "$work/err.txt")"
printf 'step,loss,lr,seconds\n1,0.9,1e-4,1\n2,0.5,2e-4,2\n3,0.4,3e-4,3\n' >"$work/log.csv"
"$train" plot-loss --log "$work/log.csv" --output "$work/loss.png" 2>/dev/null && [ -s "$work/loss.png" ] || fail "plot-loss"
echo "ok"
