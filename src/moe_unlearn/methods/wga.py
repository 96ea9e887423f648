"""WGA: token weights w_t = exp(-l_t)^beta (detached); L_f = -mean(w_t l_t) over answer tokens.

Retain term (NLL, weight alpha) as in open-unlearning's WGA, which extends GradDiff.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moe_unlearn.config import require
from moe_unlearn.core import losses
from moe_unlearn.methods.base import METHODS, Batch, Method, RetainConfig


@dataclass
class WGAConfig(RetainConfig):
    beta: float = 1.0

    def validate(self, where: str) -> None:
        super().validate(where)
        require(self.beta >= 0, f"'{where}.beta' must be >= 0, got {self.beta}")


@METHODS.register("wga")
class WGA(Method):
    name = "wga"
    shares_forward = True
    config_cls = WGAConfig

    def forget_loss(self, ctx, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = ctx.forward(forget, role="forget")
        ce = losses.token_ce(out.lm, forget["labels"])
        mask = losses.answer_mask(forget["labels"])
        weights = torch.exp(-ce.detach() * self.cfg.beta)
        loss = -losses.weighted_token_mean(weights * ce, mask)
        return loss, {"forget_nll": float(losses.weighted_token_mean(ce.detach(), mask))}
