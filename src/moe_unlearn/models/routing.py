"""Capture, replay and mask the expert routing of any model `moe_layers` understands.

    with capture_routing(model) as cap:
        model(input_ids=ids, attention_mask=mask)        # any number of forward calls
    cap.layers[l].indices   # [T, k] long: experts ACTUALLY used, non-padding tokens only
    cap.layers[l].weights   # [T, k]      their mixing weights
    cap.layers[l].logits    # [T, E]      router logits
    cap.layers[l].inputs    # [T, d]      router inputs (router_inputs=True) else None
    cap.counts(l)           # [E] long:   tokens whose selection includes e
    cap.selections(c, l)    # [B, S, k]   call c's selections, -1 at padding (token -> experts)
    cap.token_mask(c)       # [B, S] bool non-padding tokens of call c

T runs over non-padding tokens in row-major (batch, position) order, concatenated over the
forward calls made inside the context. Padding comes from the `attention_mask` given to the
top-level forward (the module passed in; forwards must go through it). Selections are read
where they are used: the experts module's forward pre-hook (hidden [T, d], top_k_index
[T, k], top_k_weights [T, k]) or, for dense-score routers (Llama4), the router's output.

Every context on a model shares one set of hooks that applies, per layer, replay first, then
masking, then records to captures, so nesting order never matters. Under gradient
checkpointing the hooks re-fire during backward; each layer is recorded once per top-level
forward call, and a replay feeds the recomputation the same call's routing.
"""

from __future__ import annotations

import inspect
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from moe_unlearn.errors import UserError
from moe_unlearn.models.layout import MoELayer, moe_layers


@dataclass
class LayerRouting:
    """One layer's routing over T tokens: indices [T, k], weights [T, k], logits [T, E], inputs [T, d]."""

    indices: torch.Tensor
    weights: torch.Tensor
    logits: torch.Tensor
    inputs: torch.Tensor | None = None


@dataclass
class _Record:
    """One layer in one call, all rows (padding included) as the model saw them."""

    indices: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    inputs: torch.Tensor | None = None


@dataclass
class CallInfo:
    """One top-level forward call: its (B, S) shape and [B*S] non-padding mask (None = all)."""

    shape: tuple[int, int] | None
    mask: torch.Tensor | None
    records: dict[int, _Record] = field(default_factory=dict)


class RoutingCapture:
    """What `capture_routing` recorded; see the module docstring."""

    def __init__(self, layers: list[MoELayer], *, router_inputs: bool, keep_grad: bool) -> None:
        self.num_experts = [layer.num_experts for layer in layers]
        self.top_k = [layer.top_k for layer in layers]
        self.names = [layer.name for layer in layers]
        self.router_inputs = router_inputs
        self.keep_grad = keep_grad
        self.calls: list[CallInfo] = []
        self._layers: list[LayerRouting] | None = None

    # -- recording (called by the hooks) ---------------------------------------------------
    def _begin_call(self, shape: tuple[int, int] | None, mask: torch.Tensor | None) -> None:
        self.calls.append(CallInfo(shape, mask))
        self._layers = None

    def _record(self, layer: int, **tensors: torch.Tensor) -> None:
        if not self.calls:  # a forward that bypassed the top-level module: no padding info
            self._begin_call(None, None)
        record = self.calls[-1].records.setdefault(layer, _Record())
        for name, value in tensors.items():
            if getattr(record, name) is None:  # once per call: ignore checkpoint recomputation
                setattr(record, name, value if self.keep_grad or name == "indices" else value.detach())
        self._layers = None

    def rows(self, rows: slice, seq: int) -> RoutingCapture:
        """The capture of batch rows `rows`, first `seq` positions, of a one-call capture (one
        batch of a joint forward): shaped as if that batch had been forwarded alone."""
        if len(self.calls) != 1 or self.calls[0].shape is None:
            raise RuntimeError("RoutingCapture.rows needs a capture of exactly one forward call of known shape")
        call = self.calls[0]
        shape = call.shape

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(*shape, *t.shape[1:])[rows, :seq].reshape(-1, *t.shape[1:])

        out = RoutingCapture.__new__(RoutingCapture)
        out.__dict__.update(self.__dict__)
        n = len(range(*rows.indices(shape[0])))
        part = CallInfo((n, seq), None if call.mask is None else cut(call.mask))
        part.records = {i: _Record(*(cut(getattr(r, f)) for f in ("indices", "weights", "logits", "inputs")))
                        for i, r in call.records.items()}
        out.calls, out._layers = [part], None
        return out

    # -- reading ---------------------------------------------------------------------------
    def _record_of(self, call: int, layer: int) -> _Record:
        if not -len(self.calls) <= call < len(self.calls):
            raise IndexError(f"call {call} out of range: {len(self.calls)} forward calls were captured")
        if not 0 <= layer < len(self.num_experts):
            raise IndexError(f"MoE layer {layer} out of range 0..{len(self.num_experts) - 1}")
        record = self.calls[call].records.get(layer)
        if record is None or record.indices is None or record.logits is None:
            raise RuntimeError(f"MoE layer {layer} did not run in captured call {call}")
        return record

    def call_routing(self, call: int, layer: int) -> LayerRouting:
        """Routing of one forward call at one layer, non-padding tokens only."""
        record, mask = self._record_of(call, layer), self.calls[call].mask

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return t if t is None or mask is None else t[mask.to(t.device)]

        return LayerRouting(pick(record.indices), pick(record.weights),  # type: ignore[arg-type]
                            pick(record.logits), pick(record.inputs))  # type: ignore[arg-type]

    @property
    def layers(self) -> list[LayerRouting]:
        """Per MoE layer, all captured calls concatenated (non-padding tokens only)."""
        if self._layers is None:
            self._layers = []
            for layer in range(len(self.num_experts)):
                parts = [self.call_routing(c, layer) for c in range(len(self.calls))]
                if not parts:
                    raise RuntimeError("nothing was captured: run a forward inside capture_routing")
                inputs = [p.inputs for p in parts]
                self._layers.append(LayerRouting(
                    torch.cat([p.indices for p in parts]), torch.cat([p.weights for p in parts]),
                    torch.cat([p.logits for p in parts]),
                    torch.cat(inputs) if all(i is not None for i in inputs) else None,  # type: ignore[arg-type]
                ))
        return self._layers

    @property
    def tokens(self) -> int:
        """Non-padding tokens seen over all captured calls."""
        return sum(int(call.mask.sum()) if call.mask is not None else self._rows(c) for c, call in enumerate(self.calls))

    def _rows(self, call: int) -> int:
        return self._record_of(call, 0).indices.shape[0]  # type: ignore[union-attr]

    def counts(self, layer: int) -> torch.Tensor:
        """[E] long: number of tokens whose selection at `layer` includes each expert."""
        return torch.bincount(self.layers[layer].indices.reshape(-1), minlength=self.num_experts[layer])

    def frequencies(self) -> list[torch.Tensor]:
        """Per layer, [E] float: fraction of tokens routed to each expert (sums to k)."""
        tokens = max(self.tokens, 1)
        return [self.counts(layer).double() / tokens for layer in range(len(self.num_experts))]

    def token_mask(self, call: int) -> torch.Tensor:
        """[B, S] bool: the non-padding tokens of one call."""
        info = self.calls[call]
        if info.shape is None:
            raise RuntimeError("call shape unknown: run the forward through the model passed to capture_routing")
        if info.mask is None:
            device = self._record_of(call, 0).indices.device  # type: ignore[union-attr]
            return torch.ones(info.shape, dtype=torch.bool, device=device)
        return info.mask.reshape(info.shape)

    def selections(self, call: int, layer: int) -> torch.Tensor:
        """[B, S, k] long: experts each token of one call was routed to at `layer`, -1 at padding."""
        record, mask = self._record_of(call, layer), self.token_mask(call)
        out = record.indices.reshape(*mask.shape, -1).clone()  # type: ignore[union-attr]
        out[~mask.to(out.device)] = -1
        return out


class _Replay:
    """Feeds the captured indices/weights of call c, layer l to the model's call c, layer l."""

    def __init__(self, source: RoutingCapture) -> None:
        self.source = source
        self.call = -1

    def begin_call(self, shape: tuple[int, int] | None) -> None:
        self.call += 1
        if self.call >= len(self.source.calls):
            raise UserError(f"replay_routing: forward call {self.call + 1} but the capture holds only "
                            f"{len(self.source.calls)}; replay the same inputs and batching as the capture")
        want = self.source.calls[self.call].shape
        if shape is not None and want is not None and tuple(shape) != tuple(want):
            raise UserError(f"replay_routing: call {self.call} has shape {tuple(shape)} but the capture had "
                            f"{tuple(want)}; replay the same inputs and batching as the capture")

    def apply(self, layer: int, indices: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        call = self.source.calls[max(self.call, 0)]
        record = call.records.get(layer)
        if record is None or record.indices is None or record.weights is None:
            raise UserError(f"replay_routing: MoE layer {layer} was not captured in call {self.call}")
        if record.indices.shape != indices.shape:
            raise UserError(f"replay_routing: layer {layer} routes {tuple(indices.shape)} tokens x k but the capture "
                            f"had {tuple(record.indices.shape)}; replay the same inputs and batching")
        src_idx = record.indices.to(indices.device)
        src_w = record.weights.detach().to(device=weights.device, dtype=weights.dtype)
        if call.mask is None:
            return src_idx, src_w
        keep = call.mask.to(indices.device)[:, None]
        return torch.where(keep, src_idx, indices), torch.where(keep, src_w, weights)


class _Hooks:
    """One shared set of hooks per model; contexts attach to it and it removes itself when idle."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = moe_layers(model)
        self.captures: list[RoutingCapture] = []
        self.replays: list[_Replay] = []
        self.masks: list[dict[int, torch.Tensor]] = []
        self.handles = [model.register_forward_pre_hook(self._on_model, with_kwargs=True)]
        for layer in self.layers:
            i = layer.index
            self.handles.append(layer.router.register_forward_pre_hook(lambda m, a, i=i: self._on_router_input(i, a)))
            self.handles.append(layer.router.register_forward_hook(lambda m, a, o, i=i: self._on_router(i, o)))
            if layer.rule.selection == "experts_args":
                names = list(inspect.signature(layer.experts.forward).parameters)[1:3]
                self.handles.append(layer.experts.register_forward_pre_hook(
                    lambda m, a, kw, i=i, n=names: self._on_experts(i, a, kw, n), with_kwargs=True))

    def idle(self) -> bool:
        return not (self.captures or self.replays or self.masks)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _on_model(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        shape, mask = _batch_info(args, kwargs)
        for capture in self.captures:
            capture._begin_call(shape, mask)
        for replay in self.replays:
            replay.begin_call(shape)

    def _on_router_input(self, i: int, args: tuple) -> None:
        wanted = [c for c in self.captures if c.router_inputs]
        if wanted and args:
            x = args[0]
            for capture in wanted:
                capture._record(i, inputs=x.reshape(-1, x.shape[-1]))

    def _route(self, i: int, indices: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for replay in self.replays:
            indices, weights = replay.apply(i, indices, weights)
        for masked in self.masks:
            if i in masked:
                weights = weights.masked_fill(masked[i].to(indices.device)[indices], 0)
        for capture in self.captures:
            capture._record(i, indices=indices, weights=weights)
        return indices, weights

    def _on_experts(self, i: int, args: tuple, kwargs: dict, names: list[str]) -> tuple[tuple, dict] | None:
        args, kwargs = list(args), dict(kwargs)
        slots: list[tuple[list | dict, Any]] = [
            (args, pos) if len(args) > pos else (kwargs, name) for pos, name in zip((1, 2), names)
        ]
        indices, weights = (container[key] for container, key in slots)  # type: ignore[index]
        new_indices, new_weights = self._route(i, indices, weights)
        if new_indices is indices and new_weights is weights:
            return None
        for (container, key), value in zip(slots, (new_indices, new_weights)):
            container[key] = value  # type: ignore[index]
        return tuple(args), kwargs

    def _on_router(self, i: int, output: Any) -> Any:
        layer = self.layers[i]
        outputs = output if isinstance(output, tuple) else (output,)
        logits = outputs[layer.logits_index]
        for capture in self.captures:
            capture._record(i, logits=logits.reshape(-1, layer.num_experts))
        if layer.rule.selection != "router_scores":
            return None
        # Dense-score routers: scores [T, E] are non-zero exactly at the k selected experts.
        scores = outputs[layer.rule.scores_index]
        indices = scores.topk(layer.top_k, dim=-1).indices
        weights = scores.gather(-1, indices)
        new_indices, new_weights = self._route(i, indices, weights)
        if new_indices is indices and new_weights is weights:
            return None
        new_scores = torch.zeros_like(scores).scatter(-1, new_indices, new_weights)
        result = list(outputs)
        result[layer.rule.scores_index] = new_scores
        return tuple(result) if isinstance(output, tuple) else new_scores


def _batch_info(args: tuple, kwargs: dict) -> tuple[tuple[int, int] | None, torch.Tensor | None]:
    """(B, S) of the current call and its [B*S] bool non-padding mask (None when all count)."""
    ref = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(ref, torch.Tensor):
        ref = kwargs.get("inputs_embeds")
    if not isinstance(ref, torch.Tensor) or ref.dim() < 2:
        return None, None
    batch, seq = int(ref.shape[0]), int(ref.shape[1])
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return (batch, seq), None
    return (batch, seq), mask[:, -seq:].reshape(-1).bool()  # generation: mask covers past + current


_HOOKS: "weakref.WeakKeyDictionary[nn.Module, _Hooks]" = weakref.WeakKeyDictionary()


@contextmanager
def _attached(model: nn.Module, kind: str, item: Any) -> Iterator[_Hooks]:
    hooks = _HOOKS.get(model)
    if hooks is None:
        hooks = _HOOKS[model] = _Hooks(model)
    bucket = getattr(hooks, kind)
    bucket.append(item)
    try:
        yield hooks
    finally:
        bucket.remove(item)
        if hooks.idle():
            hooks.remove()
            del _HOOKS[model]


@contextmanager
def capture_routing(model: nn.Module, *, router_inputs: bool = False,
                    keep_grad: bool = False) -> Iterator[RoutingCapture]:
    """Record the routing of every forward inside the context.

    keep_grad=True keeps the autograd graph on logits, weights and inputs (for losses on
    them); the default detaches, so a capture never holds activations alive.
    """
    capture = RoutingCapture(moe_layers(model), router_inputs=router_inputs, keep_grad=keep_grad)
    with _attached(model, "captures", capture):
        yield capture


@contextmanager
def replay_routing(model: nn.Module, capture: RoutingCapture) -> Iterator[None]:
    """Forwards inside use `capture`'s indices and weights (call by call) for non-padding tokens.

    The model must have the same MoE layout (E, k per layer) and get the same inputs and
    batching, in the same order, as the captured forwards.
    """
    layers = moe_layers(model)
    layout = ([layer.num_experts for layer in layers], [layer.top_k for layer in layers])
    if layout != (capture.num_experts, capture.top_k):
        raise UserError("replay_routing: the model's MoE layout (experts and top-k per layer) differs from the "
                        "captured model's; replay onto a model of the same architecture")
    if not capture.calls:
        raise UserError("replay_routing: the capture is empty; run forwards inside capture_routing first")
    with _attached(model, "replays", _Replay(capture)):
        yield


@contextmanager
def mask_experts(model: nn.Module, experts: dict[int, list[int]]) -> Iterator[None]:
    """Forwards inside run with the given {MoE layer index: [expert, ...]} contributing zero."""
    layers = moe_layers(model)
    lookup: dict[int, torch.Tensor] = {}
    for layer_index, chosen in experts.items():
        if not 0 <= layer_index < len(layers):
            raise UserError(f"mask_experts: MoE layer {layer_index} out of range 0..{len(layers) - 1}")
        num = layers[layer_index].num_experts
        bad = [e for e in chosen if not 0 <= e < num]
        if bad:
            raise UserError(f"mask_experts: expert(s) {bad} out of range 0..{num - 1} at MoE layer {layer_index}")
        flags = torch.zeros(num + 1, dtype=torch.bool)  # index E = "no expert" in some experts modules
        flags[list(chosen)] = True
        lookup[layer_index] = flags
    with _attached(model, "masks", lookup):
        yield
