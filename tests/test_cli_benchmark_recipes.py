"""`moe-unlearn unlearn RECIPE` then `moe-unlearn report DIR` on the fixture data and the tiny
benchmark's model: the recipes run end to end and the report shows the paper's columns."""

from __future__ import annotations

import json

import pytest
import yaml
from bench.fixtures import to_fixtures
from benchmark_recipes import RECIPES_DIR, without_pending

from moe_unlearn.cli.main import run
from moe_unlearn.config import resolve_yaml

SMALL = {"model": {"dtype": "float32", "device": "cpu"}, "train": {"max_steps": 2, "epochs": None, "grad_accum": 1,
                                                                    "precision": "fp32", "checkpoint_every": 0, "params": ["all"]}}


@pytest.mark.parametrize("name, header", [
    ("muse_news", "| run | steps | VerbMem D_f ↓ | KnowMem D_f ↓ | KnowMem D_r ↑ | PrivLeak (→0) |"),
    ("rwku", "| run | steps | forget FB ↓ | forget QA ↓ | forget AA ↓ | neighbor FB ↑ | neighbor QA ↑ | MIA FM ↑ |"),
    ("wmdp_cyber", "| run | steps | WMDP-Bio acc ↓ | WMDP-Cyber acc ↓ | MMLU acc ↑ |"),
])
def test_recipe_runs_and_reports_the_papers_columns(name, header, tmp_path, tiny_benchmark, capsys):
    raw, _, _ = without_pending(to_fixtures(resolve_yaml(RECIPES_DIR / f"{name}.yaml")))
    raw["model"] = {**raw["model"], **SMALL["model"], "path": str(tiny_benchmark.parent / "model")}
    raw["train"] = {**raw["train"], **SMALL["train"]}
    raw["data"].update(max_length=32, batch_size=2, retain_batch_size=2)
    raw["eval"].update(max_length=48, max_new_tokens_qa=4, max_new_tokens_text=4, batch_size=4)
    raw["eval"]["metrics"] = [m for m in raw["eval"]["metrics"] if m != "lm_eval"]  # lm-eval's tasks need the hub
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert run(["unlearn", str(cfg), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["benchmark"] == raw["benchmark"] and metrics["steps"] == 2
    assert metrics["routing"]["stability"]["forget"] is not None  # routing measured on the recipe's QA records
    if name == "muse_news":
        assert metrics["forget"]["rouge_text"] is not None and metrics["privacy"]["value"] is not None
    if name == "rwku":
        assert {"rwku_rouge_FB", "rwku_rouge_QA", "rwku_rouge_AA", "text_nll"} <= set(metrics["forget"])
        assert metrics["rwku_mmlu"]["value"] is not None and metrics["adapter_info"]["seuf"]
    assert (out / "model" / "README.md").read_text().startswith("---\n")
    assert run(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert header in (tmp_path / "report" / "report.md").read_text()
