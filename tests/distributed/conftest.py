"""The 1-process runs with the same global batch that the 2-process jobs must equal (each run
once per session; the jobs themselves: launch.two_process_job)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cases import raw_config  # noqa: E402


@pytest.fixture(scope="session")
def one_process(tiny_benchmark, tmp_path_factory) -> Callable[[str], Path]:
    """case name -> its 1-process run directory (per-process batch 8 = 2 processes x 4)."""
    from moe_unlearn.train import build_config, run_unlearning

    root = tmp_path_factory.mktemp("one")

    def run(name: str) -> Path:
        out = root / name
        if not (out / "metrics.json").is_file():
            run_unlearning(build_config(raw_config(name, tiny_benchmark, per_process_batch=8)), out_dir=out,
                           progress=False)
        return out

    return run
