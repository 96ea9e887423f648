#!/usr/bin/env bash
# One command: create .venv (if needed) and run the performance benchmarks (issue 7).
#   scripts/bench.sh                 full bench: table on stdout, JSON in bench/results/bench.json
#   scripts/bench.sh --smoke         seconds-long plumbing check (what CI runs via tests/bench)
#   scripts/bench.sh --only steps memory --threads 2
# Builds and caches the embedded "default" benchmark on first use (minutes on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m bench.run "$@"
