"""The recipe rehearsal at CPU scale: two recipes run through the engine with their own training
settings and give a finite step time, a measured peak and an estimate (scripts/gpu_check.sh runs
the same code at full scale on a lent GPU)."""

from __future__ import annotations

import json
import math

import pytest

from bench import rehearsal
from moe_unlearn.config import resolve_yaml
from moe_unlearn.models import moe_layers
from moe_unlearn.models.memory import GEOMETRY, meta_model
from moe_unlearn.models.tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal") / "rehearsal.json"
    argv = ["--scale", "cpu", "--only", "wmdp_cyber", "muse_news", "--steps", "1", "--out", str(out)]
    assert rehearsal.main(argv) == 0
    return {r["recipe"]: r for r in json.loads(out.read_text())}


def _cpu_model(name: str):
    """The recipe's model at CPU scale, shapes only."""
    hub = resolve_yaml(rehearsal.RECIPES_DIR / f"{name}.yaml")["model"]["path"]
    return meta_model(rehearsal.model_geometry(hub, "cpu", tiny_tokenizer()))


@pytest.mark.parametrize("name", ["wmdp_cyber", "muse_news"])
def test_row_has_a_step_time_a_peak_and_an_estimate(rows, name):
    row = rows[name]
    assert row["status"] == "ok"
    assert math.isfinite(row["step_s"]) and row["step_s"] > 0
    assert math.isfinite(row["peak_GiB"]) and row["peak_GiB"] > 0
    assert row["estimate_GiB"] > 0 and row["estimate_over_peak"] > 0
    assert row["trained"] == row["estimate_trained"]  # the estimate sized what the run trained
    hub = resolve_yaml(rehearsal.RECIPES_DIR / f"{name}.yaml")["model"]["path"]
    assert row["geometry"]["layers"] == GEOMETRY[hub][1]["num_hidden_layers"]  # the real model's depth
    assert f"| {name} |" in rehearsal.table([row])


@pytest.mark.parametrize("name", ["wmdp_cyber", "muse_news"])
def test_the_run_trained_with_the_recipes_own_settings(rows, name):
    recipe = resolve_yaml(rehearsal.RECIPES_DIR / f"{name}.yaml")
    s = rows[name]["settings"]
    assert (s["method"], s["adapters"]) == (recipe["method"], recipe["adapters"])
    assert s["params"] == recipe["train"]["params"]
    for section in (recipe["method"], *recipe["adapters"]):
        assert recipe.get(section, {}).items() <= s["sections"][section].items()


def test_muse_trains_its_last_eight_layers_and_seuf_one_expert_with_its_router(rows):
    muse = _cpu_model("muse_news")
    assert rows["muse_news"]["trained"] == sum(p.numel() for n, p in muse.named_parameters()
                                                if any(f".layers.{i}." in n for i in range(40, 48)))
    layer = moe_layers(_cpu_model("wmdp_cyber"))[0]
    expert = sum(p.numel() for p in layer.experts.parameters()) // layer.num_experts
    assert rows["wmdp_cyber"]["trained"] == expert + layer.router_weight.numel()


def test_gpu_check_runs_it_at_full_scale_with_the_time_left_and_tables_its_rows(rows, tmp_path):
    from bench import gpu_check

    check = gpu_check.rehearsal(tmp_path, elapsed=gpu_check.REHEARSAL_DEADLINE - 100)
    assert check.cmd[2:] == ["bench.rehearsal", "--scale", "full", "--steps", "2", "--budget", "100", "--out",
                             str(tmp_path / "rehearsal.json")]
    assert check.limit == 100 + gpu_check.REHEARSAL_LAST
    skipped = {"recipe": "muse_news", "model": "Qwen/Qwen3-30B-A3B", "status": "skipped: estimate 94.0 GiB > ..."}
    (tmp_path / "rehearsal.json").write_text(json.dumps([rows["wmdp_cyber"], skipped]))
    table = gpu_check.rehearsal_rows(check, tmp_path)
    assert [(name, result) for name, result, _ in table] == [("rehearsal: wmdp_cyber", "ok"),
                                                            ("rehearsal: muse_news", "skipped")]
