#!/usr/bin/env bash
# On a networked machine with the project's .venv: the wheels scripts/gpu_check.sh installs on a
# GPU machine (no network, Python 3.12, its own torch/accelerate). Into .whl/ (git-ignored):
#  - transformers, peft and regex at the versions .venv (and CI) test, so the GPU runs the tested
#    stack rather than whatever the machine holds (an older transformers lacks some MoE archs);
#  - rouge-score (no wheel on PyPI: built here), nltk and its defusedxml, which such machines often lack;
#  - deepspeed (a pure-Python wheel built here: its ops compile on first use) and what it needs
#    beyond torch's usual company (hjson, pydantic), for the ZeRO-3 check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TARGET_PY=${GPU_PYTHON_VERSION:-3.12}
ver() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "transformers==$(ver transformers)" "peft==$(ver peft)" "regex==$(ver regex)" "nltk==$(ver nltk)" "defusedxml==$(ver defusedxml)" \
  "hjson==$(ver hjson)" "pydantic==$(ver pydantic)" "pydantic-core==$(ver pydantic-core)" \
  "annotated-types==$(ver annotated-types)" "typing-inspection==$(ver typing-inspection)" \
  "typing-extensions==$(ver typing-extensions)"
"$PY" -m pip wheel -q --no-deps -w .whl "rouge-score==$(ver rouge-score)" "deepspeed==$(ver deepspeed)"
ls .whl
