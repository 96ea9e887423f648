#!/usr/bin/env bash
# One prepared check for a GPU machine with no network and its own python3 holding torch (CUDA)
# and accelerate; prints one table (bench/gpu_check.py says what it checks).
#   bash scripts/gpu_check.sh          (PYTHON=... to pick another interpreter)
# The tested transformers/peft and what that machine lacks (rouge-score, nltk) travel as wheels in
# .whl/: make them on a networked machine with `bash scripts/gpu_wheels.sh`. To skip building the
# embedded benchmark there (4 min on 2 CPU cores), carry a built cache and point MOE_UNLEARN_CACHE
# at it: here `MOE_UNLEARN_CACHE=$PWD/.gpu-cache moe-unlearn benchmark build --preset P --out /tmp/b-P`
# for P in default and tiny, carry .gpu-cache, and run `MOE_UNLEARN_CACHE=$PWD/.gpu-cache bash scripts/gpu_check.sh`.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=""
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/moe-unlearn-site .whl/*.whl || exit 1
  extra=/tmp/moe-unlearn-site
fi
export PYTHONPATH="$PWD/src:$PWD${extra:+:$extra}${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export MOE_UNLEARN_CACHE=${MOE_UNLEARN_CACHE:-/tmp/moe-unlearn-cache}
exec "$PY" -m bench.gpu_check "$@"
