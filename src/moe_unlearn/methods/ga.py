"""Gradient ascent: L = -CE(D_f) (mean answer-token cross-entropy, ascended)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moe_unlearn.core import losses
from moe_unlearn.methods.base import METHODS, Batch, Method


@dataclass
class GAConfig:
    """GA has no settings: it only ascends the forget cross-entropy."""


@METHODS.register("ga")
class GA(Method):
    name = "ga"
    shares_forward = True
    config_cls = GAConfig

    def forget_loss(self, ctx, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = ctx.forward(forget, role="forget")
        nll = losses.answer_nll(out.lm, forget["labels"])
        return -nll, {"forget_nll": float(nll.detach())}
