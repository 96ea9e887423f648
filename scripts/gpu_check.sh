#!/usr/bin/env bash
# One prepared check for a GPU machine with no network and its own python3 holding torch (CUDA),
# transformers, accelerate and peft; prints one table (bench/gpu_check.py says what it checks).
#   bash scripts/gpu_check.sh          (PYTHON=... to pick another interpreter)
# Packages that machine lacks (rouge-score and its nltk) travel as wheels in .whl/: make them on
# a networked machine with `bash scripts/gpu_wheels.sh`.
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
