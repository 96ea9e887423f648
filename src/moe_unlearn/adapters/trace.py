"""TRACE (arXiv 2606.10338) -- a RECONSTRUCTION from the abstract; the paper body and code are not public.

Forget data loads a few experts far more than retain data does, so the retain term barely
protects them. TRACE reweights the base method's retain loss so that each forget-critical
expert is seen on the retain side as often as on the forget side:
- f_e^(l)(D): share of D's tokens whose top-k at layer l holds e (original model, in prepare).
- critical experts: largest f_f / (f_r + eps) per layer (top-m), or ratio >= a threshold; an
  expert with f_f <= f_r is never critical.
- w_e = f_f (1 - f_r) / (f_r (1 - f_f)) clipped to [1, w_max]: with one critical expert the
  weighted retain frequency sum_t w_t 1[e in S_t] / sum_t w_t then equals f_f exactly.
- token weight: product (or max) of w_e over the critical experts the token is routed to
  (its routing in the current training forward), 1 otherwise; the engine normalises the
  weights to mean 1 over answer tokens and the method applies them to its retain loss.
A method without a retain term (plain GA, or alpha = 0) has nothing to reweight: error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from moe_unlearn.adapters.base import ADAPTERS, Adapter
from moe_unlearn.adapters.routing_io import capture, frequencies
from moe_unlearn.config import require
from moe_unlearn.core.needs import Needs
from moe_unlearn.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from moe_unlearn.core.context import RunContext
    from moe_unlearn.models.routing import RoutingCapture


@dataclass
class TraceConfig:
    select: Literal["top_m", "threshold"] = "top_m"
    top_m: int = 1  # critical experts per layer (select=top_m)
    ratio_threshold: float = 2.0  # f_f / f_r at least this (select=threshold)
    w_max: float = 10.0
    combine: Literal["product", "max"] = "product"
    layers: list[int] | None = None  # MoE layers considered (None: all)
    eps: float = 1e-6

    def validate(self, where: str) -> None:
        require(self.top_m >= 1, f"'{where}.top_m' must be >= 1, got {self.top_m}")
        require(self.ratio_threshold > 1, f"'{where}.ratio_threshold' must be > 1, got {self.ratio_threshold}")
        require(self.w_max >= 1, f"'{where}.w_max' must be >= 1, got {self.w_max}")
        require(self.eps > 0, f"'{where}.eps' must be > 0, got {self.eps}")


def odds_weight(f_forget: torch.Tensor, f_retain: torch.Tensor, w_max: float) -> torch.Tensor:
    """w = f_f (1 - f_r) / (f_r (1 - f_f)) clipped to [1, w_max] (elementwise, float64)."""
    ff, fr = f_forget.double(), f_retain.double()
    w = ff * (1 - fr) / (fr * (1 - ff)).clamp_min(1e-30)
    return w.nan_to_num(nan=1.0, posinf=w_max).clamp(1.0, w_max)


@dataclass
class Critical:
    layer: int
    expert: int
    f_forget: float
    f_retain: float
    weight: float


@ADAPTERS.register("trace")
class Trace(Adapter):
    name = "trace"
    config_cls = TraceConfig

    @classmethod
    def needs(cls, cfg: TraceConfig) -> Needs:
        # it reweights the method's retain loss from the retain routing; the weights only read
        # which experts each token chose, so the captured logits need no graph
        return Needs(requires_retain_term=True, capture=frozenset({"retain"}), capture_grad=False)

    def __init__(self, cfg: TraceConfig) -> None:
        super().__init__(cfg)
        self.critical: list[Critical] = []
        self.weight_stats = {"batches": 0, "mean_max": 0.0, "share_weighted": 0.0}

    def check(self, ctx: RunContext) -> None:
        bad = [i for i in self.cfg.layers or [] if not 0 <= i < len(ctx.layers)]
        if bad:
            raise UserError(f"'trace.layers' {bad} out of range: the model has MoE layers 0..{len(ctx.layers) - 1}")

    @torch.no_grad()
    def prepare(self, ctx: RunContext) -> None:
        f_forget = frequencies(capture(ctx.model, ctx.iter_split("forget")))
        f_retain = frequencies(capture(ctx.model, ctx.iter_split("retain")))
        self.critical = []
        for layer in self.cfg.layers if self.cfg.layers is not None else range(len(ctx.layers)):
            ff, fr = f_forget[layer], f_retain[layer]
            ratio = ff / (fr + self.cfg.eps)
            order = ratio.argsort(descending=True)
            if self.cfg.select == "top_m":
                chosen = order[: self.cfg.top_m]
            else:
                chosen = order[ratio[order] >= self.cfg.ratio_threshold]
            weights = odds_weight(ff, fr, self.cfg.w_max)
            for e in chosen.tolist():
                if ff[e] > fr[e]:
                    self.critical.append(Critical(layer, e, float(ff[e]), float(fr[e]), float(weights[e])))

    def retain_token_weights(self, ctx: RunContext, batch: dict[str, torch.Tensor],
                             routing: RoutingCapture) -> torch.Tensor | None:
        """[B, S] weights of the retain batch from its routing in this forward (1 at padding)."""
        mask = routing.token_mask(-1)
        w = token_weights(routing, self.critical, self.cfg.combine)
        out = torch.ones(mask.shape, dtype=torch.float32, device=mask.device)
        out[mask] = w.to(out)
        self.weight_stats["batches"] += 1
        self.weight_stats["mean_max"] += float(w.max())
        self.weight_stats["share_weighted"] += float((w > 1).float().mean())
        return out

    def state_dict(self) -> dict[str, Any]:
        """The running weight statistics (prepare() recomputes the critical experts on --resume)."""
        return {"weight_stats": dict(self.weight_stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight_stats.update(state.get("weight_stats", {}))

    def summary(self) -> dict[str, Any]:
        n = max(self.weight_stats["batches"], 1)
        return {
            "critical": [vars(c) for c in self.critical],
            "combine": self.cfg.combine,
            "mean_max_token_weight": round(self.weight_stats["mean_max"] / n, 4),
            "mean_share_of_weighted_tokens": round(self.weight_stats["share_weighted"] / n, 4),
        }


def token_weights(routing: RoutingCapture, critical: list[Critical], combine: str) -> torch.Tensor:
    """[T] weight of each token of the last captured call: product or max of w_e over hits."""
    device = routing.call_routing(-1, 0).indices.device
    w = torch.ones(routing.call_routing(-1, 0).indices.shape[0], dtype=torch.float64, device=device)
    for c in critical:
        hit = (routing.call_routing(-1, c.layer).indices == c.expert).any(dim=1)
        factor = torch.where(hit, torch.full_like(w, c.weight), torch.ones_like(w))
        w = w * factor if combine == "product" else torch.maximum(w, factor)
    return w
