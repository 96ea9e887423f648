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
  .venv/bin/python -m pip install -q --no-compile --upgrade pip
  .venv/bin/python -m pip install -q --no-compile "$TORCH_SPEC"
  .venv/bin/python -m pip install -q --no-compile -e ".[dev,lmeval,deepspeed,tracking]" "$TORCH_SPEC"
  # byte-compile on every core (pip compiles one file at a time); as pip does, a file that only a
  # newer Python parses (torch ships one) is left to the interpreter instead of failing the setup
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi
