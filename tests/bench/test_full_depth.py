"""The full-depth bench's plain loop computes the loss the engine computes, on the same batches."""

from __future__ import annotations

import json

import pytest
import torch

from bench.full_depth import DEPTH, PlainLoop, build_model
from bench.session import trainer_for


@pytest.mark.parametrize("method", ["ga", "graddiff"])
def test_plain_loop_loss_equals_the_engines(tiny_benchmark, tmp_path, method):
    model_dir = tiny_benchmark.parent / json.loads(tiny_benchmark.read_text())["model"]
    path = build_model(DEPTH["smoke"], model_dir, tmp_path / "model")
    trainer = trainer_for(tiny_benchmark, tmp_path / "run", method, [], [f"model.path={path}"])
    plain = PlainLoop(path, method, trainer)
    forget, retain = trainer.pairs.batch(0)
    ours, _ = trainer.micro_step(forget, retain)
    assert float(plain.loss(forget, retain)) == pytest.approx(float(ours), rel=1e-4)
    before = [p.detach().clone() for p in plain.model.parameters()]
    plain.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, plain.model.parameters()))
