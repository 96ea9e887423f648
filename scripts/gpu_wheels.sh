#!/usr/bin/env bash
# On a networked machine: the wheels scripts/gpu_check.sh installs on a GPU machine that lacks them
# (rouge-score has no wheel on PyPI: it is built here; nltk is pure Python). Into .whl/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
"$PY" -m pip wheel -q --no-deps -w .whl "rouge-score==0.1.2"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "nltk==3.9.1"
ls .whl
