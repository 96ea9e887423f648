"""GradDiff: gamma * (-CE(D_f)) + alpha * retain loss (NLL, or KL masked to answer tokens)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moe_unlearn.core import losses
from moe_unlearn.methods.base import METHODS, Batch, Method, RetainConfig


@dataclass
class GradDiffConfig(RetainConfig):
    """gamma, alpha and retain_loss ("nll" | "kl") as in open-unlearning's GradDiff."""


@METHODS.register("graddiff")
class GradDiff(Method):
    name = "graddiff"
    config_cls = GradDiffConfig

    def forget_loss(self, ctx, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = ctx.forward(forget, role="forget")
        nll = losses.answer_nll(out.lm, forget["labels"])
        return -nll, {"forget_nll": float(nll.detach())}
