"""NPO: L_f = -(2/beta) mean log sigmoid(-beta [log pi(y|x) - log pi_ref(y|x)]).

log pi_ref over the forget set is computed once in prepare() (no reference model kept).
The retain term (NLL by default, weight alpha) follows open-unlearning's NPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from moe_unlearn.config import require
from moe_unlearn.core import losses
from moe_unlearn.methods.base import METHODS, Batch, Method, RetainConfig, reference_logps


@dataclass
class NPOConfig(RetainConfig):
    beta: float = 0.1

    def validate(self, where: str) -> None:
        super().validate(where)
        require(self.beta > 0, f"'{where}.beta' must be > 0, got {self.beta}")


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """[B] sequence log-probs of model and reference -> scalar NPO loss ((2/beta) ln 2 if equal)."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


@METHODS.register("npo")
class NPO(Method):
    name = "npo"
    shares_forward = True
    config_cls = NPOConfig

    def prepare(self, ctx) -> None:
        self.ref_logp = reference_logps(ctx)

    def forget_loss(self, ctx, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = ctx.forward(forget, role="forget")
        nll, _ = losses.sequence_nll(out.lm, forget["labels"])
        ref = self.ref_logp[forget["index"]]
        loss = npo_loss(-nll, ref, self.cfg.beta)
        return loss, {"forget_logratio": float((-nll.detach() - ref).mean())}
