"""UNDIAL: self-distillation towards adjusted logits, answer tokens only.

target = softmax(z_ref - beta * onehot(y)); L_f = CE(z_theta, target). z_ref for every forget
answer token is computed once in prepare() and stored per example (no reference model kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from moe_unlearn.config import require
from moe_unlearn.core import losses
from moe_unlearn.methods.base import METHODS, Batch, Method, RetainConfig


@dataclass
class UNDIALConfig(RetainConfig):
    beta: float = 10.0

    def validate(self, where: str) -> None:
        super().validate(where)
        require(self.beta >= 0, f"'{where}.beta' must be >= 0, got {self.beta}")


def undial_target(ref_logits: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """[N, V] reference logits and [N] answer tokens -> [N, V] target distribution."""
    adjusted = ref_logits.float() - beta * F.one_hot(targets, ref_logits.size(-1)).float()
    return adjusted.softmax(dim=-1)


def answer_positions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that predict answer tokens [N, V] and those tokens [N], row-major order."""
    mask = losses.answer_mask(labels)[:, 1:]
    return logits[:, :-1][mask], labels[:, 1:][mask]


@METHODS.register("undial")
class UNDIAL(Method):
    name = "undial"
    config_cls = UNDIALConfig

    @torch.no_grad()
    def prepare(self, ctx) -> None:
        self.ref: dict[int, torch.Tensor] = {}
        for batch in ctx.iter_split("forget"):
            logits = ctx.forward(batch, role="reference").logits
            mask = losses.answer_mask(batch["labels"])[:, 1:]
            for row, i in enumerate(batch["index"].tolist()):
                self.ref[i] = logits[row, :-1][mask[row]].float()

    def forget_loss(self, ctx, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = ctx.forward(forget, role="forget")
        pred, targets = answer_positions(out.logits, forget["labels"])
        ref = torch.cat([self.ref[i] for i in forget["index"].tolist()])
        target = undial_target(ref, targets, self.cfg.beta)
        loss = losses.token_mean(-(target * F.log_softmax(pred.float(), dim=-1)).sum(-1))
        return loss, {"forget_nll": float(F.cross_entropy(pred.detach().float(), targets))}
