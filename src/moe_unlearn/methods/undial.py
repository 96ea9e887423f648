"""UNDIAL: self-distillation towards adjusted logits, answer tokens only.

target = softmax(z_ref - beta * onehot(y)); L_f = CE(z_theta, target). z_ref for every forget
answer token is computed once in prepare() and stored per example (no reference model kept):
N_answer_tokens x V floats, the one vocabulary-sized store of any method. The loss runs over
the answer rows in chunks (core/chunked.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from moe_unlearn.config import require
from moe_unlearn.core import chunked, losses
from moe_unlearn.core.dist import gather_objects
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


def undial_rows(z: torch.Tensor, idx: torch.Tensor, ref: torch.Tensor, targets: torch.Tensor,
                beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per answer row: (CE(z, target) with grad, the plain NLL of the answer token, detached)."""
    loss = chunked.soft_cross_entropy(z, undial_target(ref, targets, beta))
    zd = z.detach()
    return loss, torch.logsumexp(zd, dim=1) - zd.gather(1, targets[:, None]).squeeze(1)


@METHODS.register("undial")
class UNDIAL(Method):
    name = "undial"
    shares_forward = True
    config_cls = UNDIALConfig

    @torch.no_grad()
    def prepare(self, ctx) -> None:
        self.ref: dict[int, torch.Tensor] = {}
        for batch in ctx.iter_split("forget"):
            lm = ctx.forward(batch, role="reference").lm
            mask, rows = chunked.scored(batch["labels"])
            (ref,) = lm.map_rows(rows, lambda z, idx: (z,))
            mine = [(i, part.cpu()) for i, part in zip(batch["index"].tolist(), ref.split(mask.sum(1).tolist())) if i >= 0]
            for i, part in gather_objects(mine):  # every process trains on any forget example
                self.ref[i] = part.to(ctx.device)

    def forget_loss(self, ctx, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = ctx.forward(forget, role="forget")
        mask, rows = chunked.scored(forget["labels"])
        ref = torch.cat([self.ref[i] for i in forget["index"].tolist()])
        loss, nll = out.lm.map_rows(rows, partial(undial_rows, beta=self.cfg.beta), ref, forget["labels"][mask])
        return losses.token_mean(loss), {"forget_nll": float(nll.mean())}
