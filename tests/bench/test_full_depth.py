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
    plain = PlainLoop.load(path, method, trainer)
    forget, retain = trainer.pairs.batch(0)
    ours, _ = trainer.micro_step(forget, retain)
    assert float(plain.loss(forget, retain)) == pytest.approx(float(ours), rel=1e-4)
    before = [p.detach().clone() for p in plain.model.parameters()]
    plain.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, plain.model.parameters()))


def test_peak_ratio_measures_each_loop_alone_with_its_optimizer_state(tiny_benchmark, tmp_path):
    """Each step's resting bytes hold its weights and AdamW's two moments, and only its own: the
    engine is gone when the plain loop is measured (else its model would count as the loop's), and
    tensors alive in the process before (another test's, here `others`) count in neither."""
    from types import SimpleNamespace

    from bench.full_depth import peak_ratio

    model_dir = tiny_benchmark.parent / json.loads(tiny_benchmark.read_text())["model"]
    path = build_model(DEPTH["smoke"], model_dir, tmp_path / "model")
    from transformers import AutoModelForCausalLM

    weights = sum(t.numel() * 4 for t in AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).parameters())
    env = SimpleNamespace(manifest=tiny_benchmark, work=tmp_path)
    others = torch.ones(weights)  # 4x the weights' bytes, alive throughout
    fig = peak_ratio(env, path, "ga", [f"model.path={path}"], "ga peak", DEPTH["smoke"])
    mib = 2**20
    for who in ("engine", "plain"):
        start = fig.detail[f"{who}_start_MiB"] * mib
        assert 3 * weights * 0.99 <= start < 4 * weights, (who, start, weights)
        assert fig.detail[f"{who}_MiB"] > fig.detail[f"{who}_start_MiB"]  # a step allocates
    assert fig.measured == pytest.approx(fig.detail["engine_MiB"] / fig.detail["plain_MiB"], rel=1e-2)
    assert float(others.sum()) == weights
