"""lm-evaluation-harness bridge: a local YAML task backed by a JSONL file, fully offline."""

from __future__ import annotations

import json

import pytest

from moe_unlearn.errors import UserError
from moe_unlearn.eval.harness import run_lm_eval

from eval_helpers import make_cfg, make_data


def _local_task(tmp_path) -> str:
    rows = [{"question": f"Pick {c}:", "choices": ["a", "b", "c", "d"], "answer": i % 4} for i, c in enumerate("abcdab")]
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text(
        "task: moe_unlearn_tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n"
    )
    return str(tmp_path / "tasks")


def test_local_yaml_task_runs_on_the_in_memory_model(tiny, tmp_path):
    model, tok = tiny
    res = run_lm_eval(model, tok, ["moe_unlearn_tiny_mc"], include_path=_local_task(tmp_path), batch_size=4)
    acc = res["moe_unlearn_tiny_mc"]["acc,none"]
    assert acc in {i / 6 for i in range(7)}
    # the same number through the metric registry
    from moe_unlearn.eval import evaluate_model

    cfg = make_cfg(metrics=["lm_eval"], lm_eval={"tasks": ["moe_unlearn_tiny_mc"], "include_path": str(tmp_path / "tasks"), "limit": 6})
    out = evaluate_model(model, tok, make_data(2), cfg, progress=False)
    assert out["lm_eval"]["value"] == pytest.approx(acc)


def test_missing_include_path_is_a_user_error(tiny, tmp_path):
    # (an unknown task name is also a UserError, but checking it indexes lm-eval's ~20 s task tree)
    model, tok = tiny
    with pytest.raises(UserError, match="not a directory"):
        run_lm_eval(model, tok, ["x"], include_path=str(tmp_path / "nope"))
