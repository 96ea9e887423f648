"""Two processes (DDP over gloo, per-process batch 4) give the numbers of one process with the
same global batch (8): losses and metrics within 1e-4 relative, routing exactly; a resumed
2-process run equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moe_unlearn.train import build_config, run_unlearning

sys.path.insert(0, str(Path(__file__).parent))
from cases import CASES, raw_config  # noqa: E402

JOB = Path(__file__).with_name("ddp_job.py")
REL = 1e-4


@pytest.fixture(scope="module")
def runs(tiny_benchmark, tmp_path_factory):
    """{case: (1-process run dir, 2-process run dir)} and the resumed 2-process run."""
    root = tmp_path_factory.mktemp("ddp")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 500)}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", env["MASTER_PORT"], str(JOB),
                           str(tiny_benchmark), str(root / "two")], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in CASES:
        cfg = build_config(raw_config(name, tiny_benchmark, per_process_batch=8))
        run_unlearning(cfg, out_dir=root / "one" / name, progress=False)
    return root


def _log(path: Path) -> list[dict]:
    return [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines()]


def _close(a, b) -> bool:
    return a == pytest.approx(b, rel=REL, abs=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_process_with_the_global_batch(runs, name):
    one, two = runs / "one" / name, runs / "two" / name
    log1, log2 = _log(one), _log(two)
    assert [r["step"] for r in log1] == [r["step"] for r in log2] == [1, 2, 3, 4]
    for a, b in zip(log1, log2):
        numbers = [k for k in a if k not in ("step", "seconds")]
        assert set(numbers) == set(b) - {"step", "seconds"}
        assert all(_close(a[k], b[k]) for k in numbers), {k: (a[k], b[k]) for k in numbers}
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert (m1["processes"], m2["processes"]) == (1, 2)
    for split in ("forget", "retain", "holdout"):
        assert _close(m1[split]["nll"], m2[split]["nll"])
        assert m1[split]["mc_acc"] == m2[split]["mc_acc"]
    assert m1["routing"]["stability"] == m2["routing"]["stability"]  # routing counts exactly
    assert m1["routing"]["per_layer"] == m2["routing"]["per_layer"]
    assert m1["routing"]["activation"] == m2["routing"]["activation"]
    assert m1["per_example"]["forget"]["stability"] == m2["per_example"]["forget"]["stability"]
    info1, info2 = m1["adapter_info"], m2["adapter_info"]
    if "trace" in info1:  # frequencies over every process's tokens
        assert info1["trace"]["critical"] == info2["trace"]["critical"]
    if "seuf" in info1:  # attribution over every process's sequences
        assert info1["seuf"]["targets"] == info2["seuf"]["targets"]
    if "keep_routing" in info1:  # every process holds every example's original routing
        assert info1["keep_routing"]["cache_bytes"] == info2["keep_routing"]["cache_bytes"] > 0
    if "grip" in info1:  # Gram matrices summed over processes, PTC statistics too
        assert info1["grip"]["null_dim"] == info2["grip"]["null_dim"]
        accepted = [[e["accepted"] for e in run["layers"]] for run in info1["grip"]["ptc"]]
        assert accepted == [[e["accepted"] for e in run["layers"]] for run in info2["grip"]["ptc"]]
    assert (one / "model" / "model.safetensors").is_file() and (two / "model" / "model.safetensors").is_file()


def test_an_interrupted_two_process_run_resumes_to_the_same_numbers(runs):
    first = next(iter(CASES))
    straight, resumed = runs / "two" / first, runs / "two" / "resumed"
    assert json.loads((resumed / "metrics.json").read_text())["resumed"] is True
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in _log(resumed)] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in _log(straight)]
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (straight, resumed))
    assert m1["forget"] == m2["forget"] and m1["routing"] == m2["routing"]
