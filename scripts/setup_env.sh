#!/usr/bin/env bash
# Create .venv in the repository root and install moe-unlearn with its test tools (and DeepSpeed,
# pure Python here: its ops are compiled on first use, and the ZeRO-3 tests use none).
# torch is pinned to 2.13.0 so pip takes the CPU wheel on disk instead of a multi-GB CUDA build;
# on a GPU machine install your CUDA torch first and set MOE_UNLEARN_TORCH to its version.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC="torch==${MOE_UNLEARN_TORCH:-2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.moe-unlearn-installed
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "$TORCH_SPEC"
  .venv/bin/python -m pip install -q -e ".[dev,lmeval,deepspeed,tracking]" "$TORCH_SPEC"
  echo "$want" > "$stamp"
fi
