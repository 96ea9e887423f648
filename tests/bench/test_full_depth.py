"""The full-depth bench's plain loop computes the loss the engine computes, on the same batches."""

from __future__ import annotations

import json

import pytest
import torch

from bench.full_depth import DEPTH, build_model


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


def test_throughput_counts_the_timed_batches_tokens_and_the_active_parameters(tiny_benchmark, tmp_path):
    """tokens/s: forget + retain tokens of the batches the timed steps read over the step time;
    GFLOP/s: 6 x (dense parameters + top_k / experts of the experts') x those tokens."""
    from bench.full_depth import throughput
    from bench.session import trainer_for

    model_dir = tiny_benchmark.parent / json.loads(tiny_benchmark.read_text())["model"]
    geometry = DEPTH["smoke"]
    path = build_model(geometry, model_dir, tmp_path / "model")
    trainer = trainer_for(tiny_benchmark, tmp_path / "run", "graddiff", [], [f"model.path={path}"])
    tokens = [sum(int(b["attention_mask"].sum()) for b in trainer.pairs.batch(i)) for i in (2, 3)]
    params = dict(trainer.ctx.model.named_parameters())
    experts = sum(p.numel() for n, p in params.items() if ".experts." in n)
    active = sum(p.numel() for p in params.values()) - experts + experts * geometry["top_k"] // geometry["experts"]
    assert 0 < active < sum(p.numel() for p in params.values())
    per_s, flops = throughput("graddiff", trainer, 0.5, range(2, 4), geometry, "")
    assert per_s.measured == pytest.approx(sum(tokens) / 2 / 0.5, rel=1e-3)
    assert flops.measured == pytest.approx(6 * active * sum(tokens) / 2 / 0.5 / 1e9, rel=1e-3)
    assert per_s.passed is None and flops.unit == "GFLOP/s"
