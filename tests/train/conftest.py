"""Tiny unlearning configs on the embedded "tiny" benchmark, cheap to run end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moe_unlearn.config import apply_overrides
from moe_unlearn.train import UnlearnConfig, build_config

QUICK_EVAL = {"metrics": ["nll", "mc_acc", "stability"], "max_examples": 24, "batch_size": 24}


@pytest.fixture
def run_config(tiny_benchmark, tmp_path):
    """run_config(*overrides) -> (config file, UnlearnConfig): GradDiff, 4 steps, quick eval."""

    def make(*overrides: str, method: str = "graddiff") -> tuple[Path, UnlearnConfig]:
        raw = {
            "method": method,
            "data": {"manifest": str(tiny_benchmark), "batch_size": 4, "retain_batch_size": 4},
            "train": {"lr": 1e-3, "max_steps": 4, "checkpoint_every": 2},
            "eval": dict(QUICK_EVAL),
        }
        raw = apply_overrides(raw, list(overrides))
        path = tmp_path / f"cfg-{len(list(tmp_path.glob('cfg-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path, build_config(raw)

    return make

