"""The engine calls every adapter hook, in order, with what the contract promises."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from moe_unlearn.adapters import ADAPTERS, Adapter
from moe_unlearn.core.losses import answer_mask
from moe_unlearn.core.needs import Needs
from moe_unlearn.train import run_unlearning


@dataclass
class ProbeConfig:
    term: float = 0.25


class Probe(Adapter):
    """Records what it is given; weights retain tokens 3:1 on the second half of each answer."""

    name = "probe"
    config_cls = ProbeConfig

    @classmethod
    def needs(cls, cfg):
        return Needs(selects_trainable=True, capture=frozenset({"retain"}))

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls: list[str] = []
        self.steps = 0

    def check(self, ctx):
        self.calls.append("check")

    def prepare(self, ctx):
        self.calls.append("prepare")

    def select_trainable(self, ctx, params):
        self.calls.append("select_trainable")
        return [p for p in params if "experts" in p.name or "gate" in p.name]

    def retain_token_weights(self, ctx, batch, routing):
        w = torch.ones(batch["labels"].shape)
        w[:, batch["labels"].shape[1] // 2:] = 3.0
        return w

    def loss_terms(self, ctx, forwards):
        return {"extra": torch.tensor(self.cfg.term)}

    def after_step(self, ctx):
        self.steps += 1
        assert ctx.step == self.steps

    def after_training(self, ctx):
        self.calls.append("after_training")

    def state_dict(self):
        return {"steps": torch.tensor(self.steps)}

    def load_state_dict(self, state):
        self.steps = int(state["steps"])

    def summary(self):
        return {"steps": self.steps, "calls": self.calls}


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setitem(ADAPTERS._entries, "probe", Probe)


def test_hooks_run_in_order_with_routing_and_normalised_weights(probe, run_config, tmp_path):
    _, cfg = run_config("adapters=[probe]", "probe.term=0.25", "train.max_steps=3")
    metrics = run_unlearning(cfg, out_dir=tmp_path / "p", progress=False)
    info = metrics["adapter_info"]["probe"]
    assert info["calls"] == ["check", "prepare", "select_trainable", "after_training"]
    assert info["steps"] == 3
    n_all = sum(p.numel() for p in _model(tmp_path / "p").parameters())
    assert 0 < metrics["memory"]["trainable_params"] < n_all
    log = [json.loads(x) for x in (tmp_path / "p" / "log.jsonl").read_text().splitlines()]
    for rec in log:
        assert rec["probe/extra"] == 0.25
        assert rec["loss"] == pytest.approx(rec["forget_loss"] + rec["retain_loss"] + 0.25, rel=1e-5)


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path / "model")


def test_forwards_carry_routing_for_captured_roles_only(probe, run_config, tmp_path, monkeypatch):
    seen = []
    real = Probe.loss_terms

    def spy(self, ctx, forwards):
        for role, f in forwards.items():
            seen.append((role, f.routing is not None, f.token_weights, f.batch["labels"]))
        return real(self, ctx, forwards)

    monkeypatch.setattr(Probe, "loss_terms", spy)
    _, cfg = run_config("adapters=[probe]", "train.max_steps=1")
    run_unlearning(cfg, out_dir=tmp_path / "r", progress=False)
    roles = {role: (routed, w, labels) for role, routed, w, labels in seen}
    assert set(roles) == {"forget", "retain"}
    assert roles["forget"][0] is False and roles["forget"][1] is None
    routed, weights, labels = roles["retain"]
    assert routed is True
    mask = answer_mask(labels)
    assert float(weights[mask].mean()) == pytest.approx(1.0, rel=1e-6)  # normalised over answer tokens
    half = labels.shape[1] // 2
    assert torch.allclose(weights[:, half:], 3 * weights[:, :half].max())  # ratio 3:1 kept


def test_adapter_state_survives_resume(probe, run_config, tmp_path, monkeypatch):
    """A hard interrupt inside step 3 keeps checkpoint 2; resuming restores the adapter's state."""
    from moe_unlearn.errors import RunFailure
    from moe_unlearn.train.engine import Trainer

    _, cfg = run_config("adapters=[probe]", "train.max_steps=4", "train.checkpoint_every=2")
    real = Trainer.step

    def interrupt_in_step_3(self):
        if self.ctx.step == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "step", interrupt_in_step_3)
    with pytest.raises(RunFailure, match="interrupted during step 3; last checkpoint: step-000002"):
        run_unlearning(cfg, out_dir=tmp_path / "s", progress=False)
    monkeypatch.setattr(Trainer, "step", real)
    metrics = run_unlearning(cfg, out_dir=tmp_path / "s", resume=True, progress=False)
    assert metrics["adapter_info"]["probe"]["steps"] == 4 and metrics["steps"] == 4
