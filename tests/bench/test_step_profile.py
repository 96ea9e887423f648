"""bench.profile_step splits a step into its phases; bench.step_candidates' optimizer variants
train the same numbers up to rounding (fused AdamW is the engine's default off sharding)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.full_depth import DEPTH, build_model
from bench.profile_step import PHASES, profile, table
from bench.session import trainer_for
from bench.step_candidates import OPTIMIZERS, with_optimizer


@pytest.fixture
def smoke_model(tiny_benchmark, tmp_path):
    model_dir = tiny_benchmark.parent / json.loads(tiny_benchmark.read_text())["model"]
    return build_model(DEPTH["smoke"], model_dir, tmp_path / "model")


def test_phases_cover_the_step_and_name_the_adapter(tiny_benchmark, tmp_path, smoke_model):
    trainer = trainer_for(tiny_benchmark, tmp_path / "run", "ga", ["grip"], [f"model.path={smoke_model}"])
    ms, top = profile(trainer, steps=1, warmup=0)
    assert set(ms) == set(PHASES)
    assert all(ms[p] > 0 for p in ("forward", "backward", "optimizer", "adapters")), ms
    assert ms["host/other"] >= 0 and top
    assert table({"ga+grip": ms}).splitlines()[-1].startswith("| step | ")


def test_engine_runs_fused_adamw_and_matches_the_per_tensor_loop(tiny_benchmark, tmp_path, smoke_model):
    common = [f"model.path={smoke_model}", "train.lr=1e-3"]
    fused = trainer_for(tiny_benchmark, tmp_path / "fused", "graddiff", [], common)
    assert all(g["fused"] for g in fused.optimizer.param_groups)
    loop = with_optimizer(trainer_for(tiny_benchmark, tmp_path / "loop", "graddiff", [], common),
                          OPTIMIZERS["per-tensor AdamW"])
    for _ in range(3):
        fused.step()
        loop.step()
    for (name, a), b in zip(fused.trainable.full.items(), loop.trainable.full.values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_experts_variants_run_each_implementation_on_the_same_numbers(tiny_benchmark, tmp_path, smoke_model):
    """Each variant's model dispatches to its own experts implementation, and each computes the
    grouped_mm model's loss up to float rounding (an implementation is a speed choice only)."""
    from bench.step_candidates import EXPERTS, experts_variants

    steps = experts_variants(tiny_benchmark, tmp_path, smoke_model, "ga")
    assert list(steps) == [f"experts {impl}" for impl in EXPERTS]
    trainers = [step.__self__ for step in steps.values()]
    assert [t.ctx.model.config._experts_implementation for t in trainers] == list(EXPERTS)
    losses = [[step()["loss"] for _ in range(2)] for step in steps.values()]
    assert losses[0][0] != losses[0][1]  # the second step reads other weights and another batch
    for other in losses[1:]:
        assert other == pytest.approx(losses[0], rel=1e-5)


def test_loss_variants_compute_the_same_gradient():
    """The compiled loss variant times the same computation as the eager one: the label
    log-probability's gradient, equal up to rounding (and not zero: the labels are scored)."""
    from bench.step_candidates import loss_variants

    labels = torch.full((2, 6), -100)
    labels[0, 2:] = torch.tensor([3, 1, 4, 1])
    labels[1, 4:] = torch.tensor([5, 9])
    steps = loss_variants(labels, vocab=16)
    eager, compiled = steps["loss eager"](), steps["loss compiled"]()
    assert eager.abs().sum() > 0 and eager[0, 0].abs().sum() == 0  # row t - 1 predicts a scored position t only
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
