"""GRIP on routers FSDP2 shards (DTensors), 2 processes on CPU: the projected update of the whole
router matrix lands in every process's shard, identical everywhere (see fsdp_grip_job.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).with_name("fsdp_grip_job.py")


def test_grip_projects_fsdp2_sharded_routers(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    port = str(29000 + os.getpid() % 400)
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", port, str(JOB), str(tmp_path / "r.json")],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["sharded"] is True  # the routers really are DTensors
    assert result["max_error"] < 1e-5  # whole rows = old + P(delta); each process holds its chunk
    assert result["moved"] > 1e-3  # the projection leaves room to move
    assert result["same_on_every_process"] is True
