"""train.log_with: accelerate's trackers get every logged loss and metric and the final metrics
(TensorBoard's event files read back here); log.jsonl stays the source of truth."""

from __future__ import annotations

import json

import pytest

from moe_unlearn.errors import UserError
from moe_unlearn.train import run_unlearning


def _events(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = [p for p in folder.rglob("events.out.tfevents.*")]
    assert runs, f"no event file below {folder}"
    found: dict[str, list[tuple[int, float]]] = {}
    for path in runs:
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def test_tensorboard_event_files_hold_the_losses_and_the_metrics(run_config, tmp_path):
    _, cfg = run_config("train.log_with=[tensorboard]", "train.eval_every=2")
    out = tmp_path / "run"
    metrics = run_unlearning(cfg, out_dir=out, progress=False)
    scalars = _events(out / "tracking")
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [x for x in log if "loss" in x]
    assert [s for s, _ in scalars["loss"]] == [x["step"] for x in steps] == [1, 2, 3, 4]
    assert [v for _, v in scalars["loss"]] == pytest.approx([x["loss"] for x in steps], rel=1e-6)
    evals = [x for x in log if "eval" in x]
    assert [s for s, _ in scalars["eval/forget/nll"]] == [x["step"] for x in evals]
    assert scalars["final/forget/nll"] == [(4, pytest.approx(metrics["forget"]["nll"], rel=1e-6))]
    assert scalars["final/routing/stability/retain"][0][1] == pytest.approx(metrics["routing"]["stability"]["retain"])


def test_an_unknown_or_missing_tracker_is_one_line_before_training(run_config, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"unknown tracker 'tensorbord' \(did you mean 'tensorboard'\?\)"):
        run_config("train.log_with=[tensorbord]")
    import moe_unlearn.train.tracking as tracking

    monkeypatch.setitem(tracking.TRACKERS, "wandb", "no_such_package_here")
    _, cfg = run_config("train.log_with=[wandb]")
    with pytest.raises(UserError, match="train.log_with: wandb needs the 'no_such_package_here' package"):
        run_unlearning(cfg, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
