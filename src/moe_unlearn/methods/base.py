"""The Method protocol: a base unlearning objective is a loss object, not a Trainer.

The engine calls `prepare(ctx)` once on the ORIGINAL model (reference quantities such as the
forget set's log-probabilities are computed there, so no second model copy is kept), then
`loss(ctx, forget, retain)` every step. Methods run the model only through `ctx.forward`, so
adapters see the routing of every training forward, and weight their retain loss with
`out.token_weights` through `losses.weighted_token_mean`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from moe_unlearn.config import require
from moe_unlearn.core import losses
from moe_unlearn.core.context import RunContext
from moe_unlearn.core.dist import all_reduce_sum
from moe_unlearn.core.needs import Needs
from moe_unlearn.registry import Registry
from moe_unlearn.vocab import Batch


@dataclass
class MethodOutput:
    """The scalar to minimise and the numbers to log for this step."""

    loss: torch.Tensor
    logs: dict[str, float]


@dataclass
class RetainConfig:
    """Settings shared by every method with a retain term: total = gamma*L_f + alpha*L_r."""

    gamma: float = 1.0
    alpha: float = 1.0  # 0 switches the retain term off
    retain_loss: Literal["nll", "kl"] = "nll"

    def validate(self, where: str) -> None:
        require(self.gamma > 0, f"'{where}.gamma' must be > 0, got {self.gamma}")
        require(self.alpha >= 0, f"'{where}.alpha' must be >= 0 (0 disables the retain term), got {self.alpha}")


class Method:
    """Base class; subclasses set name/config_cls and implement forget_loss or loss.

    What the engine reads: needs(cfg) (its capability record: a retain term, a reference
    during training) and select_params.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    # True for an objective that learns its data (fine-tuning): run by `finetune`, refused by `unlearn`
    learns: ClassVar[bool] = False
    # True when the loss reads the forget and retain batches only through ctx.forward's outputs
    # (Needs.shares_forward): the engine then runs both batches in one forward
    shares_forward: ClassVar[bool] = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def needs(cls, cfg: Any) -> Needs:
        """What the method with settings cfg needs: a retain term when alpha > 0, and with the KL
        retain loss ctx.reference() during training."""
        retain = isinstance(cfg, RetainConfig) and cfg.alpha > 0
        return Needs(retain_term=retain, reference=retain and cfg.retain_loss == "kl", shares_forward=cls.shares_forward)

    def select_params(self, ctx: RunContext, specs: list[str]) -> list[str] | None:
        """Selector specs this method trains instead of train.params, or None to keep them."""
        return None

    def prepare(self, ctx: RunContext) -> None:
        """Compute reference quantities on the original model (once, before training)."""

    def forget_loss(self, ctx: RunContext, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def loss(self, ctx: RunContext, forget: Batch, retain: Batch) -> MethodOutput:
        """gamma * forget loss + alpha * retain loss (when the method has a retain term)."""
        lf, logs = self.forget_loss(ctx, forget)
        if not self.needs(self.cfg).retain_term:
            return MethodOutput(lf, {"forget_loss": float(lf.detach()), **logs})
        l_retain = retain_loss(ctx, retain, self.cfg.retain_loss)
        total = self.cfg.gamma * lf + self.cfg.alpha * l_retain
        return MethodOutput(total, {"forget_loss": float(lf.detach()), "retain_loss": float(l_retain.detach()), **logs})


def retain_loss(ctx: RunContext, retain: Batch, kind: str) -> torch.Tensor:
    """Retain NLL (mean answer-token CE) or KL(pi_ref || pi_theta) masked to answer tokens.

    Both are weighted by the adapters' retain token weights (TRACE) when present. The KL
    reference comes from ctx.reference(): the ORIGINAL values of the trainable parameters
    swapped in for one no-grad forward, not a second model.
    """
    if kind == "nll":
        out = ctx.forward(retain, role="retain")
        return losses.answer_nll(out.lm, retain["labels"], out.token_weights)
    with torch.no_grad(), ctx.reference():
        ref = ctx.forward(retain, role="reference").lm  # rows computed per chunk, with the original values
    out = ctx.forward(retain, role="retain")
    return losses.masked_kl(ref, out.lm, retain["labels"], out.token_weights)


@torch.no_grad()
def reference_logps(ctx: RunContext, make_batch: Any = None) -> torch.Tensor:
    """log pi_ref(y|x) = -NLL_sum for every forget example [N], indexed by batch["index"].

    Each process scores its own rows; the sum over processes fills every entry exactly once.
    make_batch optionally rewrites each forget batch first (IdkDPO's refusal answers).
    """
    out = torch.zeros(ctx.split_size("forget"), dtype=torch.float32, device=ctx.device)
    for batch in ctx.iter_split("forget"):
        if make_batch is not None:
            batch = make_batch(ctx, batch)
        nll, _ = losses.sequence_nll(ctx.forward(batch, role="reference").lm, batch["labels"])
        real = batch["index"] >= 0  # not a placeholder row (core.dist.shard_rows)
        out[batch["index"][real]] = -nll.float()[real]
    return all_reduce_sum(out)


METHODS: Registry[type[Method]] = Registry("method", package="moe_unlearn.methods")
