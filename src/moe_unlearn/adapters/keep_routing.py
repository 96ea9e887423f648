"""keep_routing: hold the ORIGINAL model's routing of retained tokens while everything trains.

This project's extension, not a published method (methods.md section 7 suggested it; docs/adapters.md
has the measurements). GRIP's projection keeps a router's scores on cached retained inputs, but
when every parameter trains the router INPUTS drift (upstream attention, experts and embeddings
change) and retained routing moves anyway. This adapter puts a loss on the routing itself, so
the gradient reaches the upstream layers that cause the drift.

For retained token t at MoE layer l, with current router logits z = z_t^l, the original model's
logits z0 and top-k set S = S_t^l:
  margin  relu(delta - (min_{j in S} z_j - max_{j not in S} z_j))   the original top-k stays ahead
  kl      KL(softmax(z0) || softmax(z))                              the whole router distribution
The term is  weight * mean over layers of (mean over retained tokens of the chosen losses),
added to the method's loss (logged as keep_routing/margin, keep_routing/kl).

The adapter needs a retain forward every micro-step and runs its own when the method has none
(GA). The original routing comes from `original`:
  cache      one pass over the retain split at prepare: top-k (int16) per token and layer, and the
             logits (float32) when `kl` is on; bytes in summary()["cache_bytes"]
  reference  the original model's routing of each retain batch, recomputed every micro-step under
             ctx.reference() (one no-grad forward; the engine keeps one copy of the trained
             parameters): constant memory for retain sets too large to cache
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from moe_unlearn.adapters.base import ADAPTERS, Adapter
from moe_unlearn.adapters.routing_io import capture, selection_mask
from moe_unlearn.config import require
from moe_unlearn.data import PairedBatches
from moe_unlearn.data.tokenize import to_device

if TYPE_CHECKING:  # pragma: no cover
    from moe_unlearn.core.context import ForwardOut, Role, RunContext
    from moe_unlearn.models.routing import RoutingCapture

Loss = Literal["margin", "kl", "margin+kl"]


@dataclass
class KeepRoutingConfig:
    weight: float = 10.0  # lambda: the term's weight against the method's loss
    loss: Loss = "margin"  # margin | kl | margin+kl
    margin: float = 0.5  # delta, in router logits
    margin_floor: Literal["fixed", "original"] = "fixed"  # EXPERIMENT
    original: Literal["cache", "reference"] = "cache"  # where the original routing comes from
    layers: list[int] | None = None  # MoE layers held (None: all)
    batch_size: int | None = None  # EXPERIMENT own retain sample per micro-step (None: the method's retain forward)
    roles: list[str] = field(default_factory=lambda: ["retain"])  # EXPERIMENT

    def validate(self, where: str) -> None:
        require(self.weight > 0, f"'{where}.weight' must be > 0 (drop the adapter to turn it off), got {self.weight}")
        require(self.margin >= 0, f"'{where}.margin' must be >= 0, got {self.margin}")
        require(self.layers is None or (bool(self.layers) and all(i >= 0 for i in self.layers)),
                f"'{where}.layers' must be a non-empty list of MoE layer indices or null, got {self.layers}")
        require(bool(self.roles) and set(self.roles) <= {"forget", "retain"} and len(set(self.roles)) == len(self.roles),
                f"'{where}.roles' must be a non-empty list of forget, retain (each once), got {self.roles}")
        require(self.batch_size is None or self.batch_size >= 1,
                f"'{where}.batch_size' must be >= 1 or null, got {self.batch_size}")

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(self.loss.split("+"))


@dataclass
class OriginalRouting:
    """The original model's routing of one retain batch's tokens at one layer: top-k [T, k], logits [T, E]."""

    indices: torch.Tensor
    logits: torch.Tensor | None


def topk_margin(logits: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """[T] weakest selected logit - strongest other logit."""
    weakest = logits.masked_fill(~selected, float("inf")).min(dim=1).values
    strongest_other = logits.masked_fill(selected, float("-inf")).max(dim=1).values
    return weakest - strongest_other


def margin_loss(logits: torch.Tensor, selected: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """Mean over tokens of relu(delta - (weakest selected logit - strongest other logit)); logits [T, E]."""
    return torch.relu(delta - topk_margin(logits, selected)).mean()


def kl_loss(logits: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(softmax(original) || softmax(logits)); both [T, E]."""
    return torch.nn.functional.kl_div(torch.log_softmax(logits, dim=1), torch.log_softmax(original, dim=1),
                                      log_target=True, reduction="batchmean")


@torch.no_grad()
def original_routing(ctx: RunContext, role: str, *, logits: bool) -> list[list[OriginalRouting]]:
    """The current (original) model's routing of every example of a split: [example][layer], on the CPU."""
    out: list[list[OriginalRouting]] = [[] for _ in range(ctx.split_size(role))]
    for batch in ctx.iter_split(role):
        cap = capture(ctx.model, [batch])
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        for layer in range(len(ctx.layers)):
            routing = cap.layers[layer]
            indices = routing.indices.to("cpu", torch.int16).split(lengths)
            scores = routing.logits.to("cpu", torch.float32).split(lengths) if logits else [None] * len(lengths)
            for i, idx, z in zip(batch["index"].tolist(), indices, scores):
                out[i].append(OriginalRouting(idx, z))
    return out


@ADAPTERS.register("keep_routing")
class KeepRouting(Adapter):
    name = "keep_routing"
    config_cls = KeepRoutingConfig

    def __init__(self, cfg: KeepRoutingConfig) -> None:
        super().__init__(cfg)
        self.cache: dict[str, list[list[OriginalRouting]]] = {}
        self.sampler: Any = None
        self.draw = (-1, 0)  # (step, micro-step) of the last own retain sample
        self.cache_bytes = 0
        self.layer_ids: list[int] = []

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        return self.cfg.original == "reference"

    @property
    def needs_retain_forward(self) -> bool:  # type: ignore[override]
        return self.cfg.batch_size is None and "retain" in self.cfg.roles

    def capture_roles(self) -> frozenset[Role]:
        return frozenset(self.cfg.roles)  # type: ignore[arg-type]

    def check(self, ctx: RunContext) -> None:
        from moe_unlearn.errors import UserError

        bad = [i for i in self.cfg.layers or [] if i >= len(ctx.layers)]
        if bad:
            raise UserError(f"'{self.name}.layers' names MoE layer {bad[0]} but the model has {len(ctx.layers)} "
                            f"(0..{len(ctx.layers) - 1})")

    def prepare(self, ctx: RunContext) -> None:
        self.layer_ids = sorted(set(self.cfg.layers)) if self.cfg.layers else list(range(len(ctx.layers)))
        if self.cfg.original == "cache":
            logits = "kl" in self.cfg.terms or self.cfg.margin_floor == "original"
            self.cache = {role: original_routing(ctx, role, logits=logits) for role in self.cfg.roles}
            self.cache_bytes = sum(_nbytes(r.indices) + (_nbytes(r.logits) if r.logits is not None else 0)
                                   for c in self.cache.values() for example in c for r in example)
        if self.cfg.batch_size:  # its own walk over the retain split, apart from the method's pairing
            self.sampler = PairedBatches(ctx.splits["retain"], None, batch_size=self.cfg.batch_size,
                                         retain_batch_size=1, seed=ctx.cfg.seed + 7919, pad_id=ctx.pad_id)

    def loss_terms(self, ctx: RunContext, forwards: dict[str, ForwardOut]) -> dict[str, torch.Tensor]:
        totals = {term: 0.0 for term in self.cfg.terms}
        for role in self.cfg.roles:
            if role == "retain" and self.cfg.batch_size:
                step, micro = self.draw
                self.draw = (ctx.step, micro + 1 if step == ctx.step else 0)
                batch = self.sampler.batch(ctx.step * ctx.cfg.train.grad_accum + self.draw[1])[0]
                out = ctx.forward(to_device(batch, ctx.device), role="retain")
            else:
                out = forwards.get(role)
            if out is None or out.routing is None:
                continue
            self._add(ctx, role, out, totals)
        scale = self.cfg.weight / len(self.layer_ids) / len(self.cfg.roles)
        return {term: scale * value for term, value in totals.items() if not isinstance(value, float)}  # type: ignore[misc]

    def _add(self, ctx, role, out, totals):
        original = self._original(ctx, role, out.batch)
        for layer in self.layer_ids:
            logits = out.routing.layers[layer].logits.float()  # [T, E], with grad
            orig = original[layer]
            if "margin" in totals:
                selected = selection_mask(orig.indices.to(logits.device), logits.shape[1])
                delta = self.cfg.margin
                if self.cfg.margin_floor == "original":
                    delta = topk_margin(orig.logits.to(logits.device), selected).clamp(max=self.cfg.margin)
                totals["margin"] = totals["margin"] + margin_loss(logits, selected, delta)
            if "kl" in totals:
                assert orig.logits is not None
                totals["kl"] = totals["kl"] + kl_loss(logits, orig.logits.to(logits.device))

    def _original(self, ctx: RunContext, role: str, batch: dict[str, torch.Tensor]) -> list[OriginalRouting]:
        """The original routing of this batch's tokens, per MoE layer (row-major, padding dropped)."""
        if self.cfg.original == "reference":
            with torch.no_grad(), ctx.reference():
                cap: RoutingCapture = capture(ctx.model, [batch])
            return [OriginalRouting(r.indices, r.logits.float()) for r in cap.layers]
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        examples = [self.cache[role][i] for i in batch["index"].tolist()]
        out = []
        for layer in range(len(ctx.layers)):
            parts = [ex[layer] for ex in examples]
            idx = torch.cat([p.indices[:n] for p, n in zip(parts, lengths)])
            z = torch.cat([p.logits[:n] for p, n in zip(parts, lengths)]) if parts[0].logits is not None else None
            out.append(OriginalRouting(idx, z))
        return out

    def summary(self) -> dict[str, Any]:
        return {"loss": self.cfg.loss, "weight": self.cfg.weight, "margin": self.cfg.margin,
                "original": self.cfg.original, "layers": self.layer_ids, "cache_bytes": self.cache_bytes}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
