"""2-process jobs under torchrun, as module fixtures of the multi-process tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def busy_process() -> subprocess.Popen | None:
    """With MOE_UNLEARN_TEST_LOAD=1, a process spinning on one core while a job runs: the ranks'
    timing shifts, so an order the code leaves to chance shows up here (scripts/test.sh)."""
    if os.environ.get("MOE_UNLEARN_TEST_LOAD") != "1":
        return None
    return subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 900\nwhile time.time() < end: pass"])


def two_process_job(job: str) -> Any:
    """A module fixture: the root directory `torchrun --nproc_per_node 2 JOB manifest root` wrote
    (CPU, gloo, one thread per process; under load with MOE_UNLEARN_TEST_LOAD=1)."""

    @pytest.fixture(scope="module")
    def runs(tiny_benchmark, tmp_path_factory) -> Path:
        root = tmp_path_factory.mktemp(Path(job).stem)
        torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        # --standalone: the OS picks a free rendezvous port (one computed from the pid could be
        # held by another job: a 2-thread run once failed a whole job module)
        load = busy_process()
        try:
            proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2",
                                   str(Path(__file__).with_name(job)), str(tiny_benchmark), str(root)],
                                  env=env, capture_output=True, text=True, timeout=900)
        finally:
            if load is not None:
                load.kill()
                load.wait()
        assert proc.returncode == 0, proc.stderr[-4000:]
        return root

    return runs
