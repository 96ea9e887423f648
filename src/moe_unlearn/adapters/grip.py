"""GRIP (arXiv 2601.16905): keep the expert selections of retained tokens, let routers move elsewhere.

prepare: passes of the original model over a retained cache (`cache_tokens` tokens of the
retain split), batch by batch, stream each router's inputs X_l [T, d] and original top-k into
per-expert Gram matrices; only a group of layers whose Gram stacks fit `prep_gram_mib` is
accumulated per pass (one pass for small models, one layer per pass at Qwen3-30B size), and
the inputs themselves are never held for the whole cache. Each router row j then gets an
orthonormal basis U_j of span{x_i : j in top-k(x_i)} (eigh, `eigh_chunk` experts at a time);
the row's update is projected onto the null space of that span, so Delta theta_j . x_i = 0
and the scores of selected experts stay put. What later hooks need is cached instead of X:
PTC's targets, the OLD scores Theta X ([T, E] per layer), and, with `margins`, X and the
margin bounds of the protected layers only. Routers with a
trainable bias use [x; 1] and the update [Delta theta; Delta b]. Optional margins keep unselected
experts below the smallest selected score (randomised Kaczmarz, `nullspace.kaczmarz_margins`).

after_step projects the ACTUAL update (works under Adam and weight decay):
W <- W_old + P(W - W_old), W_old the router after the previous projected step; the routers
this run trains are projected together, their bases regrouped by width (nullspace.WidthBuckets).
Post-Training Correction (PTC) refits each router by ridge regression so the new retained
inputs give the old scores, kept per layer only if the score cosine >= `ptc_min_cos` AND the
answer NLL of held-out retain examples does not rise (a refit can route tokens back to
experts that have changed since: methods.md section 7).

Modes: project | ptc | project+ptc | online (PTC every `online_every` steps and at the end) |
project+online. Correction-bias buffers (DeepSeek-V3, Ernie) are never touched.

Projector memory (docs/adapters.md, "Memory"): `span: expert` (the paper) stores [E, d', w] per
protected layer, w = min(r, d' - r) (a span wider than d'/2 as its complement); `span: shared` one [d', r] basis of ALL retained inputs (a stricter invariance:
every retained logit is kept); `basis_dtype: bfloat16` halves the bytes (projection still in
fp32); `offload_bases` keeps them in host memory and copies one layer at a time. Preparation
holds either the E x d'^2 float64 Gram stack or the layer's inputs, T x d' (`prep_gram`), and
decomposes an expert with n_e < d' tokens through its n_e x n_e Gram.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch

from moe_unlearn.adapters.base import ADAPTERS, Adapter
from moe_unlearn.adapters.nullspace import (
    RidgeStats, SpanBases, WidthBuckets, accumulate_gram, augment, kaczmarz_margins, span_bases,
    span_bases_from_inputs,
)
from moe_unlearn.adapters.routing_io import layer_inputs, retain_batches, retain_nll, selection_mask
from moe_unlearn.config import require
from moe_unlearn.core.dist import all_reduce_sum, gather_rows
from moe_unlearn.core.needs import Needs
from moe_unlearn.core.sharded import assign_full, full_tensor, reshard

if TYPE_CHECKING:  # pragma: no cover
    from moe_unlearn.core.context import ForwardOut, RunContext
    from moe_unlearn.models.layout import MoELayer

Mode = Literal["project", "ptc", "project+ptc", "online", "project+online"]


@dataclass
class GripConfig:
    mode: Mode = "project+ptc"
    cache_tokens: int = 8192  # retained tokens whose routing is protected (and refitted by PTC)
    rel_energy: float = 1e-3  # keep eigen-directions with eigenvalue >= rel_energy * largest
    max_rank: int | None = None  # cap on protected directions per router row (None: d')
    margins: bool = False  # also keep unselected experts below the selected ones
    margin_eps: float = 1e-4
    margin_iters: int = 50  # Kaczmarz iterations per step
    ptc_lambda: float = 1e-6
    ptc_min_cos: float = 0.95
    ptc_check_batches: int = 2  # held-out retain batches for the per-layer utility check
    ptc_nll_tolerance: float = 0.0  # relative retain-NLL rise a refit may cause
    ptc_routers: Literal["all", "trainable"] = "all"
    online_every: int = 10
    # memory bounds of preparation and of the stored projectors (docs/adapters.md, "Memory")
    protect: Literal["all", "trainable"] = "all"  # trainable: only the routers this run trains
    prep_gram_mib: float = 1024  # float64 Gram stacks alive per pass over the cache (>= 1 layer)
    eigh_chunk: int | None = 32  # experts per eigendecomposition (None: all E at once)
    eigh_dtype: Literal["float64", "float32"] = "float64"  # float32: half the workspace, rel_energy >= 1e-5
    basis_dtype: Literal["router", "bfloat16"] = "router"  # bfloat16: half the projector bytes (fp32 arithmetic)
    # expert: one span per router row, of the inputs that selected it (the paper); shared: one
    # span per layer of ALL retained inputs (every retained logit kept, d' x r per layer, not E x d' x r)
    span: Literal["expert", "shared"] = "expert"
    offload_bases: bool = False  # bases in host memory, copied to the accelerator one layer at a time
    # the trained routers' bases regrouped by row width into this many stacks, projected together
    # (nullspace.WidthBuckets; 0: layer by layer, as before 2026-12-07). ours: projection time at
    # full_depth on CPU over layer by layer 0.83 / 0.68 / 0.63 / 0.64 with 2 / 4 / 6 / 8 buckets,
    # one noisy run each (docs/benchmarks.md, "GRIP's projection"); 4 keeps the calls few
    project_buckets: int = 4
    # how per-expert bases are prepared: stack (stream an E x d'^2 float64 Gram stack), inputs
    # (cache the layer's inputs, T x d', and decompose expert by expert), auto (the smaller)
    prep_gram: Literal["auto", "stack", "inputs"] = "auto"
    # DEPRECATED alias (not part of GRIP): > 0 adds the keep_routing adapter's margin term on the
    # method's retain forwards with weight `consistency` and margin `consistency_margin`, logged
    # as grip/consistency, exactly as before. Use `adapters: [grip, keep_routing]` instead.
    consistency: float = 0.0
    consistency_margin: float = 0.5

    def validate(self, where: str) -> None:
        require(self.cache_tokens >= 1, f"'{where}.cache_tokens' must be >= 1, got {self.cache_tokens}")
        require(0 <= self.rel_energy < 1, f"'{where}.rel_energy' must be in [0, 1), got {self.rel_energy}")
        require(self.max_rank is None or self.max_rank >= 1,
                f"'{where}.max_rank' must be >= 1 or null, got {self.max_rank}")
        require(self.margin_eps >= 0, f"'{where}.margin_eps' must be >= 0, got {self.margin_eps}")
        require(self.margin_iters >= 1, f"'{where}.margin_iters' must be >= 1, got {self.margin_iters}")
        require(self.ptc_lambda > 0, f"'{where}.ptc_lambda' must be > 0, got {self.ptc_lambda}")
        require(-1 <= self.ptc_min_cos <= 1, f"'{where}.ptc_min_cos' must be in [-1, 1], got {self.ptc_min_cos}")
        require(self.ptc_check_batches >= 1, f"'{where}.ptc_check_batches' must be >= 1, got {self.ptc_check_batches}")
        require(self.ptc_nll_tolerance >= 0, f"'{where}.ptc_nll_tolerance' must be >= 0, got {self.ptc_nll_tolerance}")
        require(self.prep_gram_mib > 0, f"'{where}.prep_gram_mib' must be > 0, got {self.prep_gram_mib}")
        require(self.eigh_chunk is None or self.eigh_chunk >= 1,
                f"'{where}.eigh_chunk' must be >= 1 or null, got {self.eigh_chunk}")
        require(self.project_buckets >= 0, f"'{where}.project_buckets' must be >= 0, got {self.project_buckets}")
        require(self.online_every >= 1, f"'{where}.online_every' must be >= 1, got {self.online_every}")
        require(self.consistency >= 0, f"'{where}.consistency' must be >= 0, got {self.consistency}")
        require(self.consistency_margin >= 0,
                f"'{where}.consistency_margin' must be >= 0, got {self.consistency_margin}")
        if self.consistency > 0:
            warnings.warn(f"'{where}.consistency' is deprecated: it runs the keep_routing adapter's margin term; "
                          f"use adapters: [grip, keep_routing] with keep_routing.loss=margin, "
                          f"keep_routing.weight={self.consistency:g}, keep_routing.margin={self.consistency_margin:g}, "
                          f"keep_routing.roles=[retain], keep_routing.batch_size=null",
                          FutureWarning, stacklevel=2)

    @property
    def consistency_alias(self) -> Any:
        """The keep_routing settings `consistency > 0` stands for (the old term exactly), else None.
        Found through the registry: one adapter never imports another."""
        if self.consistency == 0:
            return None
        settings = ADAPTERS.get("keep_routing").config_cls
        return settings(weight=self.consistency, loss="margin", margin=self.consistency_margin, roles=["retain"],
                        batch_size=None)

    @property
    def project(self) -> bool:
        return "project" in self.mode.split("+")

    @property
    def refit(self) -> bool:
        return any(m in self.mode.split("+") for m in ("ptc", "online"))

    @property
    def online(self) -> bool:
        return "online" in self.mode.split("+")


# -- router rows as one [E, d'] matrix (weight, plus the bias column when it trains) ----------

def router_rows(layer: MoELayer, *, copy: bool = True) -> torch.Tensor:
    """[E, d'] current router rows: weight, with the trainable bias appended as a last column
    (whole values, gathered when a distributed engine shards the router). copy=False may return
    the weight itself (no bias, not sharded): for reading before the next write only."""
    w = full_tensor(layer.router_weight)
    b = layer.router_bias
    if b is not None:
        return torch.cat([w, full_tensor(b)[:, None]], dim=1)
    return w.clone() if copy else w


@torch.no_grad()
def set_router_rows(layer: MoELayer, rows: torch.Tensor) -> None:
    """Write whole router rows (every process writes the same rows; each keeps its shard)."""
    d = rows.shape[1] - (layer.router_bias is not None)
    assign_full(layer.router_weight, rows[:, :d])
    if layer.router_bias is not None:
        assign_full(layer.router_bias, rows[:, -1])


def router_features(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """Router inputs [T, d] -> [T, d'] in the router's dtype ([x; 1] for a router with bias)."""
    x = x.to(layer.router_weight.dtype)
    return x if layer.router_bias is None else augment(x)


@dataclass
class LayerState:
    """What GRIP keeps per protected MoE layer: bases, reference rows and (for margins) the cache."""

    index: int  # MoE layer index
    bases: SpanBases
    orig: torch.Tensor  # [E, d'] router rows of the original model
    old: torch.Tensor  # [E, d'] router rows after the previous projected step
    margin_x: torch.Tensor | None = None  # [T, d'] cached inputs
    margin_bound: torch.Tensor | None = None  # [T, E] allowed score rise (+inf where selected)
    prep: str = "stack"  # how the bases were prepared (GRIP._strategy)


@ADAPTERS.register("grip")
class Grip(Adapter):
    name = "grip"
    config_cls = GripConfig

    def __init__(self, cfg: GripConfig) -> None:
        super().__init__(cfg)
        self.layers: list[LayerState] = []  # protected layers, forward order
        self.stack: WidthBuckets | None = None  # the bases of `stacked`, when projected together
        self.stacked: list[LayerState] = []  # layers whose bases live in `stack`, in stack order
        self.unstacked: list[LayerState] = []  # the other protected layers, projected one by one
        self.targets: dict[int, torch.Tensor] = {}  # layer index -> [T, E] original scores on the cache (PTC)
        self.prep_passes = 0
        self.cache: list[dict[str, torch.Tensor]] = []
        self.check_batches: list[dict[str, torch.Tensor]] = []
        self.check_heldout = False
        self.prep_seconds = 0.0
        self.project_seconds = 0.0
        self.project_calls = 0
        self.margin_backtracks = 0  # rows Kaczmarz left infeasible, pulled back
        self.ptc_runs: list[dict[str, Any]] = []
        self.generator = torch.Generator()
        alias = cfg.consistency_alias  # the deprecated grip.consistency: keep_routing's code does it
        self.consistency = None if alias is None else ADAPTERS.get("keep_routing")(alias)

    @classmethod
    def needs(cls, cfg: GripConfig) -> Needs:
        """No LoRA (the projection constrains the router weights themselves, not LoRA deltas); a
        refit of every router edits untrained ones; the deprecated consistency alias needs what
        keep_routing needs, and conflicts with it (both at once would add the term twice)."""
        edits = None
        if cfg.refit and cfg.ptc_routers == "all":
            edits = (f"grip mode '{cfg.mode}' refits every router after training; "
                     "set grip.ptc_routers=trainable or grip.mode=project")
        alias = cfg.consistency_alias
        if alias is None:
            return Needs(lora=False, edits_untrained=edits)
        held = ADAPTERS.get("keep_routing").needs(alias)
        return Needs(lora=False, edits_untrained=edits, retain_forward=held.retain_forward, capture=held.capture,
                     conflicts=frozenset({"keep_routing"}))

    # -- preparation -----------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self, ctx: RunContext) -> None:
        t0 = time.perf_counter()
        self.cache, self.check_batches, self.check_heldout = retain_batches(
            ctx, self.cfg.cache_tokens, self.cfg.ptc_check_batches if self.cfg.refit else 0
        )
        self.generator = torch.Generator(device=ctx.device).manual_seed(ctx.settings.seed)
        protected = self._protected(ctx)
        needed = [layer for layer in ctx.layers if self.cfg.refit or layer.index in protected]
        self.layers, self.targets, self.prep_passes = [], {}, 0
        for group in self._groups(needed):
            self._prepare_group(ctx, group, protected)
        self._stack_bases(ctx)
        if self.consistency is not None:
            self.consistency.prepare(ctx)
        self.prep_seconds = time.perf_counter() - t0

    def _protected(self, ctx: RunContext) -> set[int]:
        """MoE layer indices whose routers get bases (none without projection): all, or the trained ones."""
        if not self.cfg.project:
            return set()
        return {layer.index for layer in ctx.layers
                if self.cfg.protect == "all" or self._router_trains(ctx, layer)}

    @staticmethod
    def _router_trains(ctx: RunContext, layer: MoELayer) -> bool:
        assert ctx.trainable is not None  # set by the engine before a non-selecting adapter's prepare
        bias = layer.router_bias
        return ctx.trainable.trains(layer.router_weight) or (bias is not None and ctx.trainable.trains(bias))

    def _strategy(self, layer: MoELayer) -> tuple[str, int]:
        """(how the layer's bases are prepared, the bytes that preparation holds during a pass):
        shared (one d' x d' Gram), stack (E x d' x d' float64) or inputs (T x d' float32 + the mask)."""
        d, e = router_rows(layer).shape[1], layer.num_experts
        if self.cfg.span == "shared":
            return "shared", d * d * 8
        stack, inputs = e * d * d * 8, self.cache_tokens * (d * 4 + e)
        if self.cfg.prep_gram == "stack" or (self.cfg.prep_gram == "auto" and stack <= inputs):
            return "stack", stack
        return "inputs", inputs

    @property
    def cache_tokens(self) -> int:
        return sum(int(b["attention_mask"].sum()) for b in self.cache)

    def _groups(self, layers: list[MoELayer]) -> list[list[MoELayer]]:
        """Consecutive layers whose preparation state (see _strategy) fits prep_gram_mib together."""
        budget, groups, used = self.cfg.prep_gram_mib * 2**20, [], 0
        for layer in layers:
            size = self._strategy(layer)[1]
            if not groups or used + size > budget:
                groups.append([])
                used = 0
            groups[-1].append(layer)
            used += size
        return groups

    def _prepare_group(self, ctx: RunContext, group: list[MoELayer], protected: set[int]) -> None:
        """One pass over the cache for `group`: stream Gram stacks, cache targets / margins, build bases."""
        rows = {layer.index: router_rows(layer) for layer in group}
        how = {layer.index: self._strategy(layer)[0] for layer in group if layer.index in protected}
        grams = {i: torch.zeros(1 if how[i] == "shared" else layer.num_experts, rows[i].shape[1], rows[i].shape[1],
                                dtype=torch.float64, device=rows[i].device)
                 for layer in group if (i := layer.index) in how and how[i] != "inputs"}
        held: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {i: [] for i in how if how[i] == "inputs"}
        targets: dict[int, list[torch.Tensor]] = {layer.index: [] for layer in group}
        margin_x: dict[int, list[torch.Tensor]] = {i: [] for i in how}
        margin_bound: dict[int, list[torch.Tensor]] = {i: [] for i in how}
        for batch in self.cache:
            captured = layer_inputs(ctx.model, group, batch)
            for layer in group:
                i = layer.index
                inputs, indices = captured[i]
                x = router_features(layer, inputs)
                scores = x @ rows[i].T  # [T, E]
                if self.cfg.refit:
                    targets[i].append(scores.float())
                if i in how:
                    sel = selection_mask(indices, layer.num_experts)
                    if how[i] == "inputs":
                        held[i].append((x, sel))
                    elif how[i] == "shared":  # every retained token: one span for all rows
                        accumulate_gram(grams[i], x, torch.ones_like(sel[:, :1]))
                    else:
                        accumulate_gram(grams[i], x, sel)
                    if self.cfg.margins:
                        margin_x[i].append(x)
                        margin_bound[i].append(_margin_bound(scores, sel, self.cfg.margin_eps))
        self.prep_passes += 1
        for layer in group:
            i = layer.index
            if self.cfg.refit:
                self.targets[i] = torch.cat(targets.pop(i))  # this process's cache tokens, in cache order
            if i not in how:
                continue
            dtype = torch.bfloat16 if self.cfg.basis_dtype == "bfloat16" else rows[i].dtype
            settings = dict(rel_energy=self.cfg.rel_energy, max_rank=self.cfg.max_rank, dtype=dtype,
                            eigh_dtype=getattr(torch, self.cfg.eigh_dtype))
            if how[i] == "inputs":  # every process's cached inputs, in 1-process order
                xs, sels = zip(*held.pop(i))
                bases = span_bases_from_inputs(gather_rows(list(xs)), gather_rows(list(sels)), **settings)
            else:  # Gram matrices summed over processes
                bases = span_bases(all_reduce_sum(grams.pop(i)), chunk=self.cfg.eigh_chunk, **settings)
            if self.cfg.offload_bases:
                bases.basis = _to_host(bases.basis)
            state = LayerState(index=i, bases=bases, orig=rows[i], old=rows[i].clone(), prep=how[i])
            if self.cfg.margins:  # the projection reads every process's cached tokens, in 1-process order
                state.margin_x = gather_rows(margin_x.pop(i))
                state.margin_bound = gather_rows(margin_bound.pop(i))
            self.layers.append(state)

    def _stack_bases(self, ctx: RunContext) -> None:
        """Move the bases of the routers this run trains into one WidthBuckets store, where its
        projection applies: per-expert spans held on the device in the routers' dtype, no margins
        (Kaczmarz reads a layer's bases), one row width d'. Other layers keep theirs."""
        self.stack, self.stacked, self.unstacked = None, [], self.layers
        if not self.cfg.project_buckets or self.cfg.span != "expert" or self.cfg.margins or self.cfg.offload_bases:
            return
        states = [s for s in self.layers  # no trained set given (a stand-in context): every router may move
                  if ctx.trainable is None or self._router_trains(ctx, ctx.layers[s.index])]
        kinds = {(s.bases.basis.shape[1], s.bases.basis.dtype, s.bases.basis.device, s.old.dtype) for s in states}
        if not states or len(kinds) > 1 or states[0].bases.basis.dtype != states[0].old.dtype:
            return
        device = states[0].bases.basis.device
        if device.type != "cpu":  # regroup from host copies: the accelerator never holds the bases twice
            for s in states:
                s.bases = replace(s.bases, basis=s.bases.basis.cpu())
        self.stack = WidthBuckets.build([s.bases for s in states], self.cfg.project_buckets, device)
        for s in states:
            s.bases = s.bases.metadata()
        self.stacked = states
        stacked = {id(s) for s in states}
        self.unstacked = [s for s in self.layers if id(s) not in stacked]

    def layer_bases(self, position: int) -> SpanBases:
        """The bases of self.layers[position], whole (rebuilt from the stack when they live there):
        for inspection, not per step."""
        state = self.layers[position]
        k = next((i for i, s in enumerate(self.stacked) if s is state), None)
        if k is None:
            return state.bases
        return replace(state.bases, basis=self.stack.layer_basis(k))

    # -- training hooks --------------------------------------------------------------------

    def loss_terms(self, ctx: RunContext, forwards: dict[str, ForwardOut]) -> dict[str, torch.Tensor]:
        if self.consistency is None:
            return {}
        terms = self.consistency.loss_terms(ctx, forwards)
        return {"consistency": sum(terms.values())} if terms else {}

    @torch.no_grad()
    def after_step(self, ctx: RunContext) -> None:
        if self.cfg.project:
            t0 = time.perf_counter()
            if self.stack is not None:
                self._project_stacked(ctx)
            states = self.unstacked
            layers = [ctx.layers[state.index] for state in states]
            deltas = [router_rows(layer, copy=False) - state.old for layer, state in zip(layers, states)]
            # whether each router moved (not when frozen, or in SEUF's other layers): one host sync for all
            moved = torch.stack([delta.any() for delta in deltas]).tolist() if deltas else []
            for layer, state, delta, move in zip(layers, states, deltas, moved):
                if move:
                    self._project(layer, state, delta)
            self.project_seconds += time.perf_counter() - t0
            self.project_calls += 1
        if self.cfg.online and ctx.step % self.cfg.online_every == 0:
            self.refit_routers(ctx)

    def _project_stacked(self, ctx: RunContext) -> None:
        """_project for every stacked router at once (a router that did not move projects a zero
        update: its rows are written back unchanged)."""
        assert self.stack is not None
        layers = [ctx.layers[state.index] for state in self.stacked]
        old = torch.cat([state.old for state in self.stacked])
        new = old + self.stack.project(torch.cat([router_rows(layer, copy=False) for layer in layers]) - old)
        for layer, state, rows in zip(layers, self.stacked, new.split(self.stack.rows)):
            self._write(layer, state, rows)

    def _project(self, layer: MoELayer, state: LayerState, delta: torch.Tensor) -> None:
        """Write the router rows moved by the projection of this step's update `delta`."""
        new = state.old + state.bases.project(delta)
        if state.margin_x is not None:
            total, pulled = kaczmarz_margins(
                new - state.orig, state.margin_x, state.margin_bound, state.bases,
                iters=self.cfg.margin_iters, previous=state.old - state.orig, generator=self.generator, tol=1e-6,
            )
            new = state.orig + total
            self.margin_backtracks += pulled
        self._write(layer, state, new)

    @staticmethod
    def _write(layer: MoELayer, state: LayerState, new: torch.Tensor) -> None:
        """Write the router rows `new` and remember them as the previous projected step's."""
        set_router_rows(layer, new)
        # the rows now hold `new` exactly unless the write rounded it to another dtype
        exact = all(p is None or p.dtype == new.dtype for p in (layer.router_weight, layer.router_bias))
        state.old = new if exact else router_rows(layer)

    @torch.no_grad()
    def after_training(self, ctx: RunContext) -> None:
        refitted_now = bool(self.ptc_runs) and self.ptc_runs[-1]["step"] == ctx.step  # online, last step
        if self.cfg.refit and not refitted_now:
            self.refit_routers(ctx)

    # -- post-training correction ----------------------------------------------------------

    @torch.no_grad()
    def refit_routers(self, ctx: RunContext) -> list[dict[str, Any]]:
        """Refit routers (forward order) to the original scores; keep a refit only if it helps."""
        t0 = time.perf_counter()
        model = ctx.model
        was_training = model.training
        model.eval()
        nll = retain_nll(model, self.check_batches, ctx.settings.loss_chunk)
        states = {state.index: state for state in self.layers}
        report = []
        for layer in ctx.layers:
            if self.cfg.ptc_routers == "trainable" and not self._router_trains(ctx, layer):
                continue
            target = self.targets[layer.index]
            stats = RidgeStats(router_rows(layer).shape[1], layer.num_experts, target.device)
            start = 0
            for batch in self.cache:
                x = router_features(layer, layer_inputs(model, [layer], batch)[layer.index][0])
                stats.add(x, target[start : start + x.shape[0]])
                start += x.shape[0]
            stats.reduce_over_processes()
            current = router_rows(layer)
            refit, cos = stats.solve(current, self.cfg.ptc_lambda)
            entry: dict[str, Any] = {"layer": layer.index, "cos": round(cos, 5), "nll_before": nll}
            accepted = cos >= self.cfg.ptc_min_cos
            if accepted:
                reshard(model)  # FSDP2: the next forward gathers the written shards
                set_router_rows(layer, refit)
                after = retain_nll(model, self.check_batches, ctx.settings.loss_chunk)
                entry["nll_after"] = after
                accepted = after <= nll * (1 + self.cfg.ptc_nll_tolerance)
                if accepted:
                    nll = after
                else:
                    reshard(model)
                    set_router_rows(layer, current)
            entry["accepted"] = accepted
            if layer.index in states:
                states[layer.index].old = router_rows(layer)
            report.append(entry)
        model.train(was_training)
        self.ptc_runs.append({"step": ctx.step, "seconds": round(time.perf_counter() - t0, 3), "layers": report})
        return report

    # -- checkpoints and summary -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What training changed; prepare() rebuilds the rest from the original model on --resume."""
        return {
            "old": [s.old for s in self.layers],
            "generator": self.generator.get_state(),
            "ptc_runs": self.ptc_runs,
            "counters": [self.project_seconds, self.project_calls, self.margin_backtracks],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        for layer, old in zip(self.layers, state["old"]):
            layer.old = old.to(layer.orig.device)
        self.generator.set_state(state["generator"])
        self.ptc_runs = state["ptc_runs"]
        self.project_seconds, self.project_calls, self.margin_backtracks = state["counters"]

    def estimate_bytes(self, layers: list[MoELayer], *, batch_tokens: int | None = None) -> int:
        """What GRIP keeps on the device through training (prepare's transient Gram stacks are not
        counted), an upper bound. `batch_tokens`: the tokens of one retain batch (batch_size x
        max_length); the cache takes whole batches until it holds cache_tokens, so it holds
        T <= cache_tokens + batch_tokens - 1 tokens (None: T unknown, ranks bounded by d' alone,
        the caches sized at cache_tokens). Per protected layer (all: which routers train is the
        run's choice): bases [E, d', r] (span shared: [1, d', r]) in the router's dtype (2 bytes
        with basis_dtype bfloat16; offload_bases: one layer's on the device), r <= min(d' / 2,
        max_rank, T) (a row's span is that of the cached inputs that selected it, and a span wider
        than d' / 2 is stored as its complement); the original
        and the previous router rows, 2 x [E, d']; with margins the cached inputs [T, d'] and
        bounds [T, E]. With a refit, every layer's targets [T, E] float32. Left out: the token
        ids of the cached and check batches (24 bytes a padded position, 8 a row)."""
        cached = None if batch_tokens is None else self.cfg.cache_tokens + batch_tokens - 1
        t = cached or self.cfg.cache_tokens
        total, bases = 0, []
        for layer in layers:
            b, e = layer.router_weight.element_size(), layer.num_experts  # the router's dtype (the model's)
            d = layer.router_weight.shape[1] + (layer.router_bias is not None)  # d': [x; 1] with a bias
            if self.cfg.refit:
                total += t * e * 4  # PTC targets, float32, every layer
            if not self.cfg.project:
                continue
            width = max(1, min(d // 2, self.cfg.max_rank or d, cached or d))  # the bases' columns
            basis_b = 2 if self.cfg.basis_dtype == "bfloat16" else b
            bases.append((1 if self.cfg.span == "shared" else e) * d * width * basis_b)
            total += 2 * e * d * b  # the original and the previous router rows
            if self.cfg.margins:
                total += t * (d + e) * b  # cached inputs and score bounds
        return total + (max(bases, default=0) if self.cfg.offload_bases else sum(bases))

    @property
    def projector_bytes(self) -> int:
        return sum(s.bases.nbytes for s in self.layers) + (0 if self.stack is None else self.stack.nbytes)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.cfg.mode,
            "cache_tokens": self.cache_tokens,
            "protected_layers": [s.index for s in self.layers],
            "null_dim": [s.bases.null_dim.tolist() for s in self.layers],  # [protected layer][expert]
            "row_dim": [int(s.orig.shape[1]) for s in self.layers],
            # share of each row's retained input energy inside its protected span (1 - what a cap gives up)
            "protected_energy": [[round(e, 5) for e in s.bases.energy.tolist()] for s in self.layers],
            "span": self.cfg.span,
            "prep_gram": [s.prep for s in self.layers],
            "projector_bytes": self.projector_bytes,
            # projector bytes on the training device at once: all of them, or one layer's when offloaded
            "projector_device_bytes": (max((s.bases.nbytes for s in self.layers), default=0) if self.cfg.offload_bases
                                       else self.projector_bytes),
            # columns of each WidthBuckets stack (none: projected layer by layer)
            "projector_buckets": [] if self.stack is None else [b.shape[2] for b in self.stack.basis],
            "ptc_target_bytes": sum(_nbytes(t) for t in self.targets.values()),
            "margin_cache_bytes": sum(_nbytes(s.margin_x) + _nbytes(s.margin_bound)
                                      for s in self.layers if s.margin_x is not None),
            "margin_rows_backtracked": self.margin_backtracks,
            "prep_passes": self.prep_passes,
            "prep_seconds": round(self.prep_seconds, 3),
            "project_ms_per_step": round(1000 * self.project_seconds / max(self.project_calls, 1), 3),
            "ptc_check_heldout": self.check_heldout,
            "ptc": self.ptc_runs,
        }


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """A host copy, page-locked when CUDA is there (asynchronous copies back to the device)."""
    host = t.to("cpu")
    return host.pin_memory() if torch.cuda.is_available() else host


def _margin_bound(scores: torch.Tensor, selected: torch.Tensor, eps: float) -> torch.Tensor:
    """[T, E] allowed rise of each unselected score: min selected score - score - eps (>= 0)."""
    floor = scores.masked_fill(~selected, float("inf")).min(dim=1, keepdim=True).values
    bound = (floor - scores - eps).clamp_min(0)
    return bound.masked_fill(selected, float("inf"))
