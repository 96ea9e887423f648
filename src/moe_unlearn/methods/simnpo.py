"""SimNPO (reference-free): l = NLL_sum/|y| - delta; L_f = -(2/beta) mean log sigmoid(beta l).

Defaults beta 4.5, delta 0, gamma 0.125 (open-unlearning); retain NLL with weight alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from moe_unlearn.config import require
from moe_unlearn.core import losses
from moe_unlearn.methods.base import METHODS, Batch, Method, RetainConfig


@dataclass
class SimNPOConfig(RetainConfig):
    gamma: float = 0.125
    beta: float = 4.5
    delta: float = 0.0

    def validate(self, where: str) -> None:
        super().validate(where)
        require(self.beta > 0, f"'{where}.beta' must be > 0, got {self.beta}")


def simnpo_loss(nll_sum: torch.Tensor, count: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """[B] answer NLL sums and token counts -> scalar SimNPO forget loss."""
    length_normalised = nll_sum / count.clamp_min(1) - delta
    return -(2.0 / beta) * F.logsigmoid(beta * length_normalised).mean()


@METHODS.register("simnpo")
class SimNPO(Method):
    name = "simnpo"
    shares_forward = True
    config_cls = SimNPOConfig

    def forget_loss(self, ctx, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = ctx.forward(forget, role="forget")
        nll, count = losses.sequence_nll(out.lm, forget["labels"])
        loss = simnpo_loss(nll, count, self.cfg.beta, self.cfg.delta)
        return loss, {"forget_nll": float((nll / count.clamp_min(1)).mean().detach())}
