#!/usr/bin/env bash
# Kill a 2-process CPU run (accelerate launch, configs/accelerate/cpu_2proc.yaml) with SIGKILL
# after its step-2 checkpoint, resume it with --resume, and check that it finished as a resumed
# run; TRIES times (default 10). Prints one line per try and "N passed, M failed" at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
tries=${1:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin=.venv/bin
"$bin/moe-unlearn" benchmark build --preset tiny --out "$work/bench" >/dev/null 2>&1 || exit 1
cat > "$work/run.yaml" <<YAML
method: ga
adapters: [grip]
data: {manifest: $work/bench/manifest.json, batch_size: 4}
train: {lr: 1.0e-3, max_steps: 8, checkpoint_every: 2}
eval: {metrics: [nll, mc_acc, stability], max_examples: 16, batch_size: 4}
YAML
launch=("$bin/accelerate" launch --config_file configs/accelerate/cpu_2proc.yaml "$bin/moe-unlearn" unlearn "$work/run.yaml" --quiet)
passed=0 failed=0
for i in $(seq 1 "$tries"); do
  out="$work/run-$i"
  setsid "${launch[@]}" --out "$out" >"$work/first-$i.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do  # until the step-2 checkpoint is in place (at most 5 min)
    [ -f "$out/checkpoints/step-000002/meta.json" ] && break
    sleep 0.5
  done
  kill -9 -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  if "${launch[@]}" --out "$out" --resume >"$work/resume-$i.log" 2>&1 \
      && grep -q '"resumed": true' "$out/metrics.json"; then
    passed=$((passed + 1)); echo "try $i: resumed ($(grep -o '"steps": [0-9]*' "$out/metrics.json"))"
  else
    failed=$((failed + 1)); echo "try $i: FAILED"; tail -5 "$work/resume-$i.log"
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
