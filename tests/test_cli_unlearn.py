"""`moe-unlearn unlearn`: two steps end to end, refusals, exit codes."""

from __future__ import annotations

import json
import re

import yaml

from moe_unlearn.cli.main import run


def _config(tmp_path, manifest, **train):
    raw = {
        "method": "graddiff",
        "data": {"manifest": str(manifest), "batch_size": 4, "retain_batch_size": 4},
        "train": {"lr": 1e-3, "max_steps": 2, "checkpoint_every": 1, **train},
        "eval": {"metrics": ["nll", "mc_acc", "stability"], "max_examples": 16},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unlearn_two_steps_writes_documented_files(tmp_path, tiny_benchmark, capsys):
    cfg = _config(tmp_path, tiny_benchmark)
    out = tmp_path / "out"
    assert run(["unlearn", str(cfg), "graddiff.alpha=2", "--out", str(out), "--quiet"]) == 0
    assert {"model", "checkpoints", "config.yaml", "log.jsonl", "metrics.json"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["method"] == "graddiff"
    assert metrics["forget"]["nll"] > 0 and "retain" in metrics["routing"]["stability"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["graddiff"]["alpha"] == 2 and resolved["train"]["max_steps"] == 2
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    assert "graddiff: 2 steps; forget nll" in capsys.readouterr().out

    # a used output dir is refused without --overwrite / --resume, and not both
    assert run(["unlearn", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert run(["unlearn", str(cfg), "--out", str(out), "--overwrite", "--resume"]) == 2
    (out / "notes.txt").write_text("mine")
    assert run(["unlearn", str(cfg), "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite replaces only what a run writes


def test_unlearn_refuses_output_inside_model_dir(tmp_path, tiny_benchmark, capsys):
    cfg = _config(tmp_path, tiny_benchmark)
    inside = tiny_benchmark.parent / "model" / "unlearned"
    assert run(["unlearn", str(cfg), "--out", str(inside)]) == 2
    assert "input model dir" in capsys.readouterr().err
    assert not inside.exists()
    # the benchmark folder holds the model: --overwrite there would delete it
    assert run(["unlearn", str(cfg), "--out", str(tiny_benchmark.parent), "--overwrite"]) == 2
    assert "contains the input model" in capsys.readouterr().err
    assert (tiny_benchmark.parent / "model" / "config.json").is_file()


def test_unlearn_user_mistakes_exit_2(tmp_path, tiny_benchmark, capsys):
    cfg = _config(tmp_path, tiny_benchmark)
    assert run(["unlearn", str(cfg), "train.lrr=1", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err
    assert run(["unlearn", str(cfg)]) == 2  # no --out and no output_dir
    assert "--out" in capsys.readouterr().err
    assert run(["unlearn", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_unlearn_divergence_exits_1(tmp_path, tiny_benchmark, capsys):
    # lr 1e19 with weight decay 1: weights x -1e19 per step, past float32's range by step 3 on any CPU
    cfg = _config(tmp_path, tiny_benchmark, lr=1e19, weight_decay=1.0, max_steps=30, max_grad_norm=None)
    assert run(["unlearn", str(cfg), "method=ga", "--out", str(tmp_path / "d"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("moe-unlearn: failed: ") and "diverged" in last
    step = int(re.search(r"at step (\d+): training diverged", last).group(1))
    assert step in (2, 3) and f"the last good checkpoint (step-{step - 1:06d})" in last, last
    assert not (tmp_path / "d" / "model").exists() and not (tmp_path / "d" / "metrics.json").exists()
