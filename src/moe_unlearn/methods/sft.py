"""Supervised fine-tuning: L = gamma * CE(D_f) + alpha * CE(D_r), both DEScended (alpha 0: D_f only).

Not an unlearning objective: `moe-unlearn finetune` runs it (and `unlearn` refuses it) to make
the models the paper recipes start from, with the same engine, checkpoints and processes: TOFU's
fine-tuned model (data.forget = TOFU's full set), its retain-only model (data.forget = the
retain split) and a MUSE target model (data.forget and data.retain = the corpus it must know).
The split is called `forget` because it is the data a later unlearning run forgets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moe_unlearn.config import require
from moe_unlearn.core import losses
from moe_unlearn.methods.base import METHODS, Batch, Method, RetainConfig


@dataclass
class SFTConfig(RetainConfig):
    """gamma weighs D_f; alpha > 0 also learns the retain split (retain_loss nll: its cross-entropy)."""

    alpha: float = 0.0

    def validate(self, where: str) -> None:
        super().validate(where)
        require(self.retain_loss == "nll", f"'{where}.retain_loss' must be nll: fine-tuning learns the retain "
                                           f"split, it does not hold it to the original (got {self.retain_loss})")


@METHODS.register("sft")
class SFT(Method):
    name = "sft"
    shares_forward = True
    config_cls = SFTConfig
    learns = True

    def forget_loss(self, ctx, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = ctx.forward(forget, role="forget")
        nll = losses.answer_nll(out.lm, forget["labels"])
        return nll, {"forget_nll": float(nll.detach())}
