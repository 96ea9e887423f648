"""keep_routing: hold the ORIGINAL model's routing while everything trains.

This project's extension, not a published method (methods.md section 7 suggested it; docs/adapters.md
has the measurements). GRIP's projection keeps a router's scores on cached retained inputs, but
when every parameter trains the router INPUTS drift (upstream attention, experts and embeddings
change) and routing moves anyway. This adapter puts a loss on the routing itself, so the
gradient reaches the upstream layers that cause the drift.

For token t at MoE layer l, with current router logits z = z_t^l, the original model's logits
z0 and top-k set S = S_t^l:
  margin  relu(delta - (min_{j in S} z_j - max_{j not in S} z_j))   the original top-k stays ahead
  kl      KL(softmax(z0) || softmax(z))                              the whole router distribution
The term is  weight * mean over roles and layers of (mean over tokens of the chosen losses),
added to the method's loss (logged as keep_routing/margin, keep_routing/kl).

roles: whose routing is held. `retain` keeps utility's routing; `forget` (on by default) keeps
the forget tokens on their original experts, so the method cannot "forget" by re-routing them
away from the experts that hold the knowledge: the knowledge must go from the weights, and
restoring the original routing (the replay attack) brings nothing back.

The retain tokens are the method's retain batch (batch_size: null; the engine runs a retain
forward for methods without a retain term, such as GA) or the adapter's own sample of
batch_size examples per micro-step (a pure function of seed and step, so resuming is exact).
The original routing comes from `original`:
  cache      one pass over the split(s) at prepare: top-k (int16) per token and layer, and the
             logits (float32) when `kl` is on; bytes in summary()["cache_bytes"]
  reference  the original model's routing of each batch, recomputed every micro-step under
             ctx.reference() (one no-grad forward; the engine keeps one copy of the trained
             parameters): constant memory for splits too large to cache
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from moe_unlearn.adapters.base import ADAPTERS, Adapter
from moe_unlearn.adapters.routing_io import capture, selection_mask
from moe_unlearn.config import require
from moe_unlearn.core.dist import gather_objects, shard_rows, world_size
from moe_unlearn.core.losses import token_mean
from moe_unlearn.core.needs import Needs
from moe_unlearn.data import PairedBatches
from moe_unlearn.data.tokenize import to_device
from moe_unlearn.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from moe_unlearn.core.context import ForwardOut, RunContext
    from moe_unlearn.models.routing import RoutingCapture

Loss = Literal["margin", "kl", "margin+kl"]


@dataclass
class KeepRoutingConfig:
    # defaults chosen on the default benchmark (seed 0) with GradDiff, docs/adapters.md
    weight: float = 10.0  # lambda: the term's weight against the method's loss
    loss: Loss = "margin+kl"  # margin | kl | margin+kl
    margin: float = 0.5  # delta, in router logits
    original: Literal["cache", "reference"] = "cache"  # where the original routing comes from
    layers: list[int] | None = None  # MoE layers held (None: all)
    batch_size: int | None = 32  # own retain sample per micro-step and process (None: the method's retain batch)
    roles: list[str] = field(default_factory=lambda: ["retain", "forget"])  # whose routing is held

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


def margin_loss(logits: torch.Tensor, selected: torch.Tensor, delta: float) -> torch.Tensor:
    """Mean over tokens (of every process) of relu(delta - (weakest selected - strongest other logit)); logits [T, E]."""
    return token_mean(torch.relu(delta - topk_margin(logits, selected)))


def kl_loss(logits: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean over tokens (of every process) of KL(softmax(original) || softmax(logits)); both [T, E]."""
    log_p0, log_p = torch.log_softmax(original, dim=1), torch.log_softmax(logits, dim=1)
    return token_mean((log_p0.exp() * (log_p0 - log_p)).sum(dim=1))


@torch.no_grad()
def original_routing(ctx: RunContext, role: str, *, logits: bool) -> list[list[OriginalRouting]]:
    """The current (original) model's routing of every example of a split, [example][layer], on the
    CPU; every process gets every example (its own sample may draw any)."""
    mine: list[tuple[int, list[OriginalRouting]]] = []
    for batch in ctx.iter_split(role):
        cap = capture(ctx.model, [batch])
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        per_layer = []
        for routing in cap.layers:
            indices = routing.indices.to("cpu", torch.int16).split(lengths)
            scores = routing.logits.to("cpu", torch.float32).split(lengths) if logits else [None] * len(lengths)
            per_layer.append([OriginalRouting(i, z) for i, z in zip(indices, scores)])
        mine += [(i, [layer[row] for layer in per_layer]) for row, i in enumerate(batch["index"].tolist()) if i >= 0]
    out: list[list[OriginalRouting]] = [[] for _ in range(ctx.split_size(role))]
    for i, routing in gather_objects(mine):
        out[i] = routing
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

    @classmethod
    def needs(cls, cfg: KeepRoutingConfig) -> Needs:
        """The routing of its roles, with gradients; the method's retain forward (batch_size: null)
        or its own sample, a forward with a graph as large as batch_size (memory estimate)."""
        retain = "retain" in cfg.roles
        return Needs(reference=cfg.original == "reference", retain_forward=retain and cfg.batch_size is None,
                     capture=frozenset(cfg.roles),  # type: ignore[arg-type]
                     extra_rows=(cfg.batch_size or 0) if retain else 0)

    def check(self, ctx: RunContext) -> None:
        bad = [i for i in self.cfg.layers or [] if i >= len(ctx.layers)]
        if bad:
            raise UserError(f"'{self.name}.layers' names MoE layer {bad[0]} but the model has {len(ctx.layers)} "
                            f"(0..{len(ctx.layers) - 1})")

    def prepare(self, ctx: RunContext) -> None:
        self.layer_ids = sorted(set(self.cfg.layers)) if self.cfg.layers else list(range(len(ctx.layers)))
        if self.cfg.original == "cache":
            logits = "kl" in self.cfg.terms
            self.cache = {role: original_routing(ctx, role, logits=logits) for role in self.cfg.roles}
            self.cache_bytes = sum(_nbytes(r.indices) + (_nbytes(r.logits) if r.logits is not None else 0)
                                   for c in self.cache.values() for example in c for r in example)
        if self.cfg.batch_size and "retain" in self.cfg.roles:  # its own walk over the retain split
            if not ctx.splits.get("retain"):
                raise UserError("'keep_routing.batch_size' draws retain examples but the run has none in the train "
                                "format; provide retain records or drop 'retain' from keep_routing.roles")
            self.sampler = PairedBatches(ctx.splits["retain"], None, batch_size=self.cfg.batch_size * world_size(),
                                         retain_batch_size=1, seed=ctx.settings.seed + 7919, pad_id=ctx.pad_id)

    def loss_terms(self, ctx: RunContext, forwards: dict[str, ForwardOut]) -> dict[str, torch.Tensor]:
        totals = {term: 0.0 for term in self.cfg.terms}
        for role in self.cfg.roles:
            if role == "retain" and self.cfg.batch_size:
                step, micro = self.draw
                self.draw = (ctx.step, micro + 1 if step == ctx.step else 0)
                batch = self.sampler.batch(ctx.step * ctx.settings.grad_accum + self.draw[1])[0]
                out = ctx.forward(to_device(shard_rows(batch), ctx.device), role="retain")
            else:
                out = forwards.get(role)
            if out is None or out.routing is None:
                continue
            self._add(ctx, role, out, totals)
        scale = self.cfg.weight / len(self.layer_ids) / len(self.cfg.roles)
        return {term: scale * value for term, value in totals.items() if not isinstance(value, float)}  # type: ignore[misc]

    def _add(self, ctx: RunContext, role: str, out: ForwardOut, totals: dict[str, Any]) -> None:
        original = self._original(ctx, role, out.batch)
        for layer in self.layer_ids:
            logits = out.routing.layers[layer].logits.float()  # [T, E], with grad
            orig = original[layer]
            if "margin" in totals:
                selected = selection_mask(orig.indices.to(logits.device), logits.shape[1])
                totals["margin"] = totals["margin"] + margin_loss(logits, selected, self.cfg.margin)
            if "kl" in totals:
                assert orig.logits is not None
                totals["kl"] = totals["kl"] + kl_loss(logits, orig.logits.to(logits.device))

    def _original(self, ctx: RunContext, role: str, batch: dict[str, torch.Tensor]) -> dict[int, OriginalRouting]:
        """The original routing of this batch's tokens at each held MoE layer (row-major, padding dropped)."""
        if self.cfg.original == "reference":
            with torch.no_grad(), ctx.reference():
                cap: RoutingCapture = capture(ctx.model, [batch])
            return {i: OriginalRouting(cap.layers[i].indices, cap.layers[i].logits.float()) for i in self.layer_ids}
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        examples = [self.cache[role][i] for i in batch["index"].tolist()]
        out = {}
        for layer in self.layer_ids:
            parts = [ex[layer] for ex in examples]
            idx = torch.cat([p.indices[:n] for p, n in zip(parts, lengths)])
            z = torch.cat([p.logits[:n] for p, n in zip(parts, lengths)]) if parts[0].logits is not None else None
            out[layer] = OriginalRouting(idx, z)
        return out

    def summary(self) -> dict[str, Any]:
        return {"loss": self.cfg.loss, "weight": self.cfg.weight, "margin": self.cfg.margin,
                "original": self.cfg.original, "layers": self.layer_ids, "cache_bytes": self.cache_bytes}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
