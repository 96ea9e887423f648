"""The bench's smoke mode end to end: every figure group runs and reports a sane number.

Not the targets (timings on a shared CI box mean nothing); the structure of the JSON and the
table, and that every measured value is a finite positive number.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_smoke_bench_writes_table_and_json(tiny_benchmark, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), "--manifest", str(tiny_benchmark)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "smoke"
    figures = result["figures"]
    groups = {f["detail"]["group"] for f in figures}
    assert groups == {"steps", "capture", "memory", "grip_prep", "grip_geometry", "grip_modes", "eval", "real_geometry",
                      "full_depth", "full_depth_gpu"}
    for f in figures:
        assert set(f) == {"figure", "measured", "target", "op", "unit", "passed", "detail"}
        assert math.isfinite(f["measured"]) and f["measured"] > 0, f
        if f["op"] == "report":
            assert f["passed"] is None
        elif f["op"] == ">=":
            assert f["passed"] == (f["measured"] >= f["target"])
        else:
            assert f["passed"] == (f["measured"] <= f["target"])
    names = [f["figure"] for f in figures]
    assert len(names) == len(set(names))
    # the printed table has one row per figure, under its header
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| figure | measured | target | pass |"
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == names
    assert result["table"].splitlines()[2:] == rows[1:]


def test_run_bench_gives_the_callers_thread_count_back(monkeypatch, tmp_path):
    """A bench run inside a test session must not leave the session's later runs on its threads."""
    import torch

    import bench.run as bench_run

    seen: list[int] = []
    monkeypatch.setattr(bench_run, "_run_bench", lambda *a, **k: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    bench_run.run_bench("smoke", only=[], threads=before + 2, out=tmp_path / "out.json")
    assert seen == [before + 2] and torch.get_num_threads() == before
