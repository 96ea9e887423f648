"""`moe-unlearn finetune`: the unlearning engine with method sft. It trains, resumes to the same
numbers after kill -9, and its outputs feed `unlearn` (model/) and `eval --retrained`
(metrics.json of a retain-only model). 2 processes equal 1: tests/distributed (case "sft")."""

from __future__ import annotations

import json

import pytest
import yaml
from train_helpers import kill_after_first_checkpoint

from moe_unlearn.cli.main import run
from moe_unlearn.train import build_config, run_unlearning


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("timing", "eval_seconds", "resumed")}


@pytest.fixture
def sft_config(tiny_benchmark, tmp_path):
    """A retain-only fine-tune of the tiny benchmark's model: data.forget = its retain split."""
    root = tiny_benchmark.parent
    manifest = json.loads(tiny_benchmark.read_text())

    def make(**train) -> tuple:
        raw = {
            "method": "sft",
            "model": {"path": str(root / manifest["model"])},
            "data": {"forget": {"path": str(root / manifest["retain"]["qa"]), "kind": "qa"},
                     "eval": {"forget": [{"path": str(root / manifest["forget"]["qa"]), "kind": "qa"}],
                              "retain": [{"path": str(root / manifest["retain"]["qa"]), "kind": "qa"}]},
                     "batch_size": 4},
            "train": {"lr": 1e-3, "max_steps": 4, "checkpoint_every": 2, **train},
            "eval": {"metrics": ["nll", "prob", "truth_ratio"], "max_examples": 16, "batch_size": 16},
        }
        path = tmp_path / f"sft-{len(list(tmp_path.glob('sft-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path, build_config(raw)

    return make


def test_finetune_trains_and_its_outputs_feed_unlearn_and_eval(sft_config, tiny_benchmark, tmp_path, capsys):
    path, _ = sft_config()
    out = tmp_path / "ft"
    assert run(["finetune", str(path), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert metrics["method"] == "sft" and metrics["steps"] == 4 and [x["step"] for x in log] == [1, 2, 3, 4]
    assert (out / "model" / "model.safetensors").is_file()

    unlearned = tmp_path / "unlearned"  # model/ is a model `unlearn` starts from
    assert run(["unlearn", str(path), "method=ga", "train.max_steps=2", f"model.path={out / 'model'}",
                "--out", str(unlearned), "--quiet"]) == 0, capsys.readouterr().err
    # metrics.json is a retain-only model's reference for eval --retrained
    evaluated = tmp_path / "eval.json"
    assert run(["eval", str(path), "--model", str(unlearned / "model"), "--retrained", str(out / "metrics.json"),
                "eval.metrics=[nll,oracle_distance]", "--out", str(evaluated), "--quiet"]) == 0, \
        capsys.readouterr().err
    result = json.loads(evaluated.read_text())
    delta = result["oracle_distance"]["delta"]["forget"]["nll"]
    assert delta == pytest.approx(result["forget"]["nll"] - metrics["forget"]["nll"])


def test_finetune_resumes_after_kill_9_to_the_numbers_of_an_uninterrupted_run(sft_config, tmp_path, capsys):
    path, cfg = sft_config(max_steps=30, lr=3e-4)
    out = tmp_path / "killed"
    kill_after_first_checkpoint("finetune", path, out)
    assert run(["finetune", str(path), "--out", str(out), "--resume", "--quiet"]) == 0, capsys.readouterr().err
    resumed = json.loads((out / "metrics.json").read_text())
    uninterrupted = run_unlearning(cfg, out_dir=tmp_path / "full", progress=False)
    assert resumed["resumed"] is True and resumed["steps"] == 30
    assert _numbers(resumed) == json.loads(json.dumps(_numbers(uninterrupted)))


@pytest.mark.parametrize("command, override, phrase", [
    ("unlearn", "method=sft", r"method 'sft' fine-tunes: run it with `moe-unlearn finetune`"),
    ("finetune", "method=graddiff", r"`moe-unlearn finetune` runs method 'sft' \(the config says 'graddiff'\)"),
    ("finetune", "adapters=[grip]", r"trains without adapters"),
])
def test_each_command_refuses_the_other_kind_of_objective(sft_config, tmp_path, capsys, command, override, phrase):
    import re

    path, _ = sft_config()
    assert run([command, str(path), override, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(phrase, err), err
    assert not (tmp_path / "x").exists()
