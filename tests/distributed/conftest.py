"""Fixtures of the multi-process tests: 2-process jobs under torchrun, and the 1-process runs
with the same global batch that they must equal (each run once per session)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cases import raw_config  # noqa: E402


def two_process_job(job: str) -> Any:
    """A module fixture: the root directory `torchrun --nproc_per_node 2 JOB manifest root` wrote
    (CPU, gloo, one thread per process)."""

    @pytest.fixture(scope="module")
    def runs(tiny_benchmark, tmp_path_factory) -> Path:
        root = tmp_path_factory.mktemp(Path(job).stem)
        torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
        port = str(29500 + (os.getpid() + len(job)) % 500)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": port}
        proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", port,
                               str(Path(__file__).with_name(job)), str(tiny_benchmark), str(root)],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return root

    return runs


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
