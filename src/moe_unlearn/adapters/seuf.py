"""SEUF / UOE (arXiv 2411.18797): unlearn in the one expert the forget data relies on most.

1. Attribution on a forget sample (original model): affinity s_e^(l) = mean over sequences of
   the mean over the sequence's tokens of g_e = softmax(router logits)_e if e is in the token's
   top-k, else 0 (`attribution: forget`, the paper's). `attribution: contrastive` (our
   extension) scores s_e^(l)(forget) - s_e^(l)(retain), the same affinity on a retain sample
   subtracted, so an expert every domain uses is not chosen over one the forget data uses
   MORE. Written to out_dir/seuf_attribution.json and seuf_attribution.png.
2. The top-M (layer, expert) pairs by score across all layers are the targets (M = 1 as in the paper).
3. Only those expert slices (one [e] slice of each fused [E, ...] tensor) train, and with
   `train_router: true` (the paper's setting) the routers of their layers too; everything else
   stays bit-identical. The default leaves the routers frozen: measured on the embedded
   benchmark, the trained router re-routed retain tokens at its layer (stability 0.44-0.53
   there) and part of the "forgetting" was re-routing (replay recovered 0.27-0.48 of forget
   accuracy); with it frozen, routing is untouched and replay recovers nothing.
4. With a trained router, an anchor loss on forget tokens at each target layer,
   alpha * mean_t || p_t - a ||^2, with p_t the softmax over all experts of the router logits
   and a the (normalised multi-hot) target, so the router cannot dodge the unlearning by
   sending forget tokens elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from moe_unlearn.adapters.base import ADAPTERS, Adapter
from moe_unlearn.adapters.routing_io import capture
from moe_unlearn.config import require
from moe_unlearn.core.dist import all_reduce_sum, is_main
from moe_unlearn.core.losses import token_mean
from moe_unlearn.core.needs import Needs
from moe_unlearn.errors import UserError
from moe_unlearn.models.selectors import select_parameters
from moe_unlearn.paths import atomic_path, atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from moe_unlearn.core.context import ForwardOut, RunContext
    from moe_unlearn.models.layout import MoELayer
    from moe_unlearn.models.routing import RoutingCapture
    from moe_unlearn.models.selectors import ParamRef


@dataclass
class SeufConfig:
    top_m: int = 1  # (layer, expert) pairs trained, chosen across all layers
    alpha: float = 1.0  # router anchor loss weight (flat over 1..1000 in the paper)
    attribution: Literal["forget", "contrastive"] = "forget"  # paper: forget affinity; ours: forget - retain
    sample_tokens: int | None = None  # tokens per split used for attribution (None: the whole split)
    # the paper trains the target layers' routers too (held by the anchor); measured here, that
    # re-routes retain tokens and fakes forgetting (docs/adapters.md), so the slices train alone
    train_router: bool = False
    heatmap: bool = True

    def validate(self, where: str) -> None:
        require(self.top_m >= 1, f"'{where}.top_m' must be >= 1, got {self.top_m}")
        require(self.alpha >= 0, f"'{where}.alpha' must be >= 0 (0 disables the anchor loss), got {self.alpha}")
        require(self.sample_tokens is None or self.sample_tokens >= 1,
                f"'{where}.sample_tokens' must be >= 1 or null, got {self.sample_tokens}")

    @property
    def anchored(self) -> bool:
        """The anchor loss runs: it has a weight and a trained router to act on."""
        return self.alpha > 0 and self.train_router


def expert_affinity(cap: RoutingCapture) -> list[torch.Tensor]:
    """Per layer [E] float64: mean over sequences (of every process) of each sequence's mean
    top-k-masked gate prob."""
    sums = [torch.zeros(e, dtype=torch.float64) for e in cap.num_experts]
    sequences = 0
    for c in range(len(cap.calls)):
        lengths = cap.token_mask(c).sum(dim=1)  # [B]
        keep = lengths > 0
        seq_of_token = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
        for layer, total in enumerate(sums):
            routing = cap.call_routing(c, layer)
            probs = torch.softmax(routing.logits.double(), dim=-1)
            gate = torch.zeros_like(probs).scatter_(1, routing.indices, probs.gather(1, routing.indices))
            per_seq = torch.zeros(lengths.numel(), probs.shape[1], dtype=torch.float64, device=probs.device)
            per_seq.index_add_(0, seq_of_token.to(probs.device), gate)
            total += (per_seq[keep] / lengths[keep, None].to(per_seq)).sum(dim=0).cpu()
        sequences += int(keep.sum())
    total = float(all_reduce_sum(torch.tensor(float(sequences), dtype=torch.float64)))
    return [all_reduce_sum(s) / max(total, 1.0) for s in sums]


def top_pairs(score: list[torch.Tensor], m: int) -> list[tuple[int, int]]:
    """The m (layer, expert) pairs with the largest score across layers, best first."""
    pairs = [(float(v), layer, e) for layer, a in enumerate(score) for e, v in enumerate(a.tolist())]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [(layer, e) for _, layer, e in pairs[:m]]


@ADAPTERS.register("seuf")
class Seuf(Adapter):
    name = "seuf"
    config_cls = SeufConfig

    @classmethod
    def needs(cls, cfg: SeufConfig) -> Needs:
        # its targets come from its own attribution, replacing train.params; it trains one expert
        # slice (and its router) itself, not LoRA deltas; the anchor reads the forget routing
        return Needs(selects_trainable=True, lora=False, capture=frozenset({"forget"}) if cfg.anchored else frozenset())

    def __init__(self, cfg: SeufConfig) -> None:
        super().__init__(cfg)
        self.affinity: list[torch.Tensor] = []  # per layer [E], forget sample
        self.retain_affinity: list[torch.Tensor] | None = None  # contrastive attribution only
        self.score: list[torch.Tensor] = []  # what the targets are chosen by
        self.targets: list[tuple[int, int]] = []
        self.sample_tokens = 0
        self.trained_numel = 0

    @property
    def target_layers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for layer, expert in self.targets:
            out.setdefault(layer, []).append(expert)
        return out

    @torch.no_grad()
    def prepare(self, ctx: RunContext) -> None:
        total = sum(layer.num_experts for layer in ctx.layers)
        if self.cfg.top_m > total:
            raise UserError(f"'seuf.top_m' is {self.cfg.top_m} but the model has only {total} (layer, expert) pairs")
        self.affinity, self.sample_tokens = self._affinity(ctx, "forget")
        self.score = self.affinity
        if self.cfg.attribution == "contrastive":
            if not ctx.splits.get("retain"):
                raise UserError("'seuf.attribution: contrastive' needs retain records in the train format; "
                                "provide them or set seuf.attribution=forget")
            self.retain_affinity, _ = self._affinity(ctx, "retain")
            self.score = [f - r for f, r in zip(self.affinity, self.retain_affinity)]
        self.targets = top_pairs(self.score, self.cfg.top_m)
        if is_main():
            self._write(ctx)

    def _affinity(self, ctx: RunContext, role: str) -> tuple[list[torch.Tensor], int]:
        """(affinity per layer, tokens used) on the first `sample_tokens` tokens of a training split."""
        batches, seen = [], 0
        for batch in ctx.iter_split(role):
            if self.cfg.sample_tokens is not None and seen >= self.cfg.sample_tokens:
                break
            batches.append(batch)
            seen += int(all_reduce_sum(batch["attention_mask"].sum()))  # every process's rows of this batch
        return expert_affinity(capture(ctx.model, batches)), seen

    def _write(self, ctx: RunContext) -> None:
        out = ctx.out_dir
        out.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "attribution": self.cfg.attribution,
            "affinity": [a.tolist() for a in self.affinity],  # [layer][expert], forget sample
            "targets": [{"layer": layer, "expert": e} for layer, e in self.targets],
            "sample_tokens": self.sample_tokens,
        }
        if self.retain_affinity is not None:
            record["retain_affinity"] = [a.tolist() for a in self.retain_affinity]
            record["score"] = [a.tolist() for a in self.score]
        atomic_write(out / "seuf_attribution.json", json.dumps(record, indent=2))
        if self.cfg.heatmap:
            title = ("SEUF affinity on the forget sample" if self.retain_affinity is None
                     else "SEUF contrastive score: forget - retain affinity")
            _heatmap(self.score, self.targets, out / "seuf_attribution.png", title)

    def select_trainable(self, ctx: RunContext, params: list[ParamRef]) -> list[ParamRef]:
        """Only the target expert slices and their layers' routers (weight and trainable bias)."""
        specs = [f"expert:{layer}:{e}" for layer, e in self.targets]
        routers = set()
        for index in self.target_layers:
            layer = ctx.layers[index]
            routers.add(id(layer.router_weight))
            if layer.router_bias is not None:
                routers.add(id(layer.router_bias))
        refs = select_parameters(ctx.model, specs)
        if self.cfg.train_router:
            refs += [r for r in select_parameters(ctx.model, ["routers"]) if id(r.param) in routers]
        self.trained_numel = sum(r.param[0].numel() if r.expert is not None else r.param.numel() for r in refs)
        return refs

    def loss_terms(self, ctx: RunContext, forwards: dict[str, ForwardOut]) -> dict[str, torch.Tensor]:
        out = forwards.get("forget")
        if not self.cfg.anchored or out is None or out.routing is None:
            return {}
        loss = 0.0
        for index, experts in self.target_layers.items():
            logits = out.routing.layers[index].logits  # [T, E], with grad
            probs = torch.softmax(logits.float(), dim=-1)
            target = torch.zeros_like(probs[0])
            target[experts] = 1.0 / len(experts)
            loss = loss + token_mean((probs - target).pow(2).sum(dim=-1))
        return {"anchor": self.cfg.alpha * loss}

    def estimate_trainable(self, layers: list[MoELayer]) -> int:
        """top_m expert slices and (at most) as many routers, sized on the first MoE layer."""
        layer = layers[0]
        expert = sum(p.numel() for p in layer.experts.parameters()) // layer.num_experts
        return self.cfg.top_m * (expert + (layer.router_weight.numel() if self.cfg.train_router else 0))

    def summary(self) -> dict[str, Any]:
        def target(layer: int, e: int) -> dict[str, Any]:
            out = {"layer": layer, "expert": e, "affinity": round(float(self.affinity[layer][e]), 6)}
            if self.retain_affinity is not None:
                out["retain_affinity"] = round(float(self.retain_affinity[layer][e]), 6)
            return out

        return {
            "attribution": self.cfg.attribution,
            "targets": [target(layer, e) for layer, e in self.targets],
            "uniform_affinity": [round(float(a.sum()) / a.numel(), 6) for a in self.affinity],
            "sample_tokens": self.sample_tokens,
            "trained_params": self.trained_numel,
        }


def _heatmap(affinity: list[torch.Tensor], targets: list[tuple[int, int]], path: Any, title: str) -> None:
    """Layers x experts image of the attribution score, targets boxed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(a.numel() for a in affinity)
    grid = torch.full((len(affinity), width), float("nan"), dtype=torch.float64)
    for i, a in enumerate(affinity):
        grid[i, : a.numel()] = a
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * width + 2), max(2.5, 0.35 * len(affinity) + 1.5)))
    im = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis")
    for layer, e in targets:
        ax.add_patch(plt.Rectangle((e - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    ax.set_title(f"{title} (targets in red)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
