"""Each base method's plain loop (the full-depth bench's baseline) computes the loss the engine
computes, on the same batch, once the trained model has left the original (where the
reference-based objectives of NPO, IdkDPO, UNDIAL and RMU are no longer constant)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.full_depth import DEPTH, build_model
from bench.plain_loop import OBJECTIVES, PlainLoop
from bench.session import trainer_for


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_plain_loss_equals_the_engines_after_a_step(tiny_benchmark, tmp_path, method):
    # the benchmark's trained model: a random one predicts near-uniformly, where UNDIAL's beta hardly matters
    path = tiny_benchmark.parent / json.loads(tiny_benchmark.read_text())["model"]
    trainer = trainer_for(tiny_benchmark, tmp_path / "run", method, [], ["train.lr=3e-3"])
    plain = PlainLoop.load(path, method, trainer)
    trainer.step()  # the engine's model moves; the plain loop's reference stays the original
    with torch.no_grad():
        for mine, theirs in zip(plain.model.parameters(), trainer.ctx.model.parameters(), strict=True):
            mine.copy_(theirs)
    forget, retain = trainer.pairs.batch(1)
    ours, logs = trainer.micro_step(forget, retain)
    assert float(plain.loss(forget, retain)) == pytest.approx(float(ours), rel=1e-4, abs=1e-6)
    if method in ("npo", "dpo"):  # the reference term is live: a loss that ignored it would differ
        assert abs(logs.get("forget_logratio", logs.get("reward_margin", 0.0))) > 1e-3, logs


@pytest.mark.parametrize("method", ["ga", "rmu"])
def test_plain_step_trains_what_the_engine_trains(tiny_benchmark, tmp_path, method):
    """All weights for GA; for RMU only decoder layers layer-2..layer (the engine's default selection)."""
    model_dir = tiny_benchmark.parent / json.loads(tiny_benchmark.read_text())["model"]
    path = build_model(DEPTH["smoke"], model_dir, tmp_path / "model")
    trainer = trainer_for(tiny_benchmark, tmp_path / "run", method, [], [f"model.path={path}"])
    plain = PlainLoop.load(path, method, trainer)
    before = {n: p.detach().clone() for n, p in plain.model.named_parameters()}
    plain.step()
    moved = {n for n, p in plain.model.named_parameters() if not torch.equal(before[n], p)}
    trained = {n for n, p in trainer.ctx.model.named_parameters() if p.requires_grad}
    assert moved and moved <= trained
    if method == "rmu":
        assert all(".layers.3." not in n and "embed" not in n for n in moved)
