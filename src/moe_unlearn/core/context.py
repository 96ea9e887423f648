"""The run context: what methods and adapters see of a run, and the one way to run the model.

`ctx.forward` runs the model WITHOUT labels, so transformers never folds the router
load-balancing loss into a loss a method might ascend; methods compute their losses from the
logits (core/losses.py).

What a training forward does besides running the model is decided by the engine, once, from
the adapters' capability records (core/needs.py), and handed to the context as a `ForwardSpec`: which roles have
their routing captured (and with gradients), and how retain tokens are weighted. The engine
reads the forwards of a micro-step back through `ctx.recording()`. The context itself never
calls an adapter and does not know which adapters or method a run has.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from moe_unlearn.core.chunked import ChunkedLogits, lm_forward, output_embedding
from moe_unlearn.core.dist import shard_rows, world_size
from moe_unlearn.core.losses import answer_mask, normalise_weights
from moe_unlearn.core.settings import RunSettings
from moe_unlearn.core.sharded import runs_whole
from moe_unlearn.core.trainable import Trainable
from moe_unlearn.data.splits import UnlearnData
from moe_unlearn.data.tokenize import collate, pad_columns, pad_id, to_device
from moe_unlearn.models import (MoELayer, RoutingCapture, capture_routing, decoder_layers, load_balancing_loss,
                                stop_after)
from moe_unlearn.vocab import Batch, Role

# (retain batch, its routing in this forward) -> [B, S] token weights, or None for "all ones"
RetainWeights = Callable[[Batch, RoutingCapture], "torch.Tensor | None"]


@dataclass
class ForwardOut:
    """One model forward of a step.

    lm: the logits as ChunkedLogits (pass it to core.losses: answer rows only, in chunks of
    train.loss_chunk; `logits` materialises all [B, S, V] on demand, each time it is read);
    hidden_states: tuple of [B, S, d] (embeddings, then each decoder layer) when asked; routing:
    RoutingCapture (gradients kept when asked) when the role is captured; token_weights [B, S]
    (retain role only, mean 1 over answer tokens) or None; aux_loss: the load-balancing loss
    when train.load_balancing_coef > 0.
    """

    lm: ChunkedLogits | None  # None: the forward ended early (ctx.forward's `until`)
    hidden_states: tuple[torch.Tensor, ...] | None
    routing: RoutingCapture | None
    token_weights: torch.Tensor | None
    batch: Batch
    aux_loss: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        return self.lm.full()


@dataclass(frozen=True)
class ForwardSpec:
    """What every training forward does besides running the model (built by the engine).

    capture: roles whose routing is recorded; capture_grad: the subset whose captured logits
    keep their autograd graph (a loss is put on them); retain_weights: the retain token weights
    (TRACE) or None.
    """

    capture: frozenset[str] = frozenset()
    capture_grad: frozenset[str] = frozenset()
    retain_weights: RetainWeights | None = None


@dataclass
class RunContext:
    """One run: model, data, settings, the trained parameter set, and the forward path."""

    model: nn.Module
    tokenizer: Any
    layers: list[MoELayer]
    settings: RunSettings  # what core/, methods and adapters read of the config
    data: UnlearnData  # the run's record sets (the engine evaluates on them)
    splits: dict[str, list[dict]]  # encoded training examples by role ("forget", "retain"), with index
    device: torch.device
    out_dir: Path
    step: int = 0
    spec: ForwardSpec = field(default_factory=ForwardSpec)
    # the parameters this run trains, computed once by the engine (None until then)
    trainable: Trainable | None = None
    lora: bool = False
    _recording: dict[str, ForwardOut] | None = None
    _in_reference: int = 0
    _joint: dict[str, Batch] | None = None  # batches one forward serves (joint())
    _joint_out: dict[str, ForwardOut] | None = None

    @contextlib.contextmanager
    def recording(self) -> Iterator[dict[str, ForwardOut]]:
        """The training forwards inside the block, by role (the last one of each role wins)."""
        self._recording = {}
        try:
            yield self._recording
        finally:
            self._recording = None

    def forward(self, batch: Batch, *, role: Role, output_hidden_states: bool = False,
                until: int | None = None) -> ForwardOut:
        """Run the model on batch (no labels); capture routing and weigh retain tokens as the spec says.

        Inside `joint()`, a training forward of one of its batches is served by the one forward
        of all of them (run at the first such call). `until`: the caller reads nothing past
        decoder layer `until` (RMU's hook there), so the forward ends after it when nothing else
        reads the rest (`_ends_at`); the result then has no logits (`lm` None)."""
        training = role != "reference"
        if self._serves_joint(role, batch, output_hidden_states):
            if self._joint_out is None:
                self._joint_out = self._forward_joint(self._joint)
            result = self._joint_out[role]
        else:
            lb = training and self.settings.load_balancing_coef > 0
            capture = training and role in self.spec.capture
            end = self._ends_at(until, role, capture or lb or output_hidden_states)
            out, lm, routing, aux = self._run(batch, capture=capture, keep_grad=role in self.spec.capture_grad,
                                              lb=lb, output_hidden_states=output_hidden_states, end=end)
            result = ForwardOut(lm, out.hidden_states if output_hidden_states else None, routing,
                                self._retain_weights(role, batch, routing), batch, aux)
        if training and self._recording is not None:
            self._recording[role] = result
        return result

    def _serves_joint(self, role: str, batch: Batch, output_hidden_states: bool) -> bool:
        """The joint forward serves only the forward it stands for: that batch under its role, with
        gradients, outside ctx.reference(), without hidden states."""
        return (self._joint is not None and self._joint.get(role) is batch and not output_hidden_states
                and torch.is_grad_enabled() and not self._in_reference)

    def _ends_at(self, until: int | None, role: str, reads_all: bool) -> nn.Module | None:
        """The decoder layer a forward may end after: `until`'s, unless something reads the whole
        forward (its routing, the load-balancing loss, hidden states, TRACE's retain weights) or
        it is collective (several processes, sharded parameters)."""
        if until is None or reads_all or (role == "retain" and self.spec.retain_weights is not None):
            return None
        return None if runs_whole(self.model) else decoder_layers(self.model)[until]

    def _run(self, batch: Batch, *, capture: bool, keep_grad: bool, lb: bool, output_hidden_states: bool = False,
             end: nn.Module | None = None
             ) -> tuple[Any, ChunkedLogits | None, RoutingCapture | None, torch.Tensor | None]:
        """One model forward: (model output, logits, routing capture or None, load-balancing loss or
        None); with `end`, the forward stops after that module: no output, no logits."""
        cm = capture_routing(self.model, keep_grad=keep_grad) if capture else contextlib.nullcontext()
        extra = {"output_router_logits": True} if lb else {}  # not every MoE class takes the flag
        inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      output_hidden_states=output_hidden_states, use_cache=False, **extra)
        if end is not None:
            with self.autocast(), stop_after(end):
                self.model(**inputs)
            return None, None, None, None
        contexts = (self.autocast, *self._reference_head())
        with cm as routing, self.autocast():
            out, lm = lm_forward(self.model, inputs, chunk=self.settings.loss_chunk, contexts=contexts)
        aux = None
        if lb and torch.is_grad_enabled() and getattr(out, "router_logits", None):
            layer = self.layers[0]
            aux = load_balancing_loss(out.router_logits, layer.num_experts, layer.top_k, batch["attention_mask"])
        return out, lm, routing, aux

    def _retain_weights(self, role: str, batch: Batch, routing: RoutingCapture | None) -> torch.Tensor | None:
        if role != "retain" or self.spec.retain_weights is None:
            return None
        w = self.spec.retain_weights(batch, routing)
        return None if w is None else normalise_weights(w.detach().float(), answer_mask(batch["labels"]))

    @contextlib.contextmanager
    def joint(self, batches: dict[str, Batch | None]) -> Iterator[None]:
        """Training forwards of these batches (each under its role, matched by identity) inside
        the block share ONE model forward over all their rows, padded to the longest: one pass
        over the weights (and, sharded, one gather of them) instead of one per batch, and larger
        matmuls. Each role gets its own rows, so losses read the same values as from separate
        forwards up to float rounding. Not with the load-balancing loss (it is defined per forward)."""
        given = {role: b for role, b in batches.items() if b is not None}
        use = len(given) > 1 and self.settings.load_balancing_coef <= 0
        self._joint, self._joint_out = (given if use else None), None
        try:
            yield
        finally:
            self._joint = self._joint_out = None

    def _forward_joint(self, batches: dict[str, Batch]) -> dict[str, ForwardOut]:
        roles = list(batches)
        seq = max(int(b["input_ids"].shape[1]) for b in batches.values())
        fills = {"input_ids": self.pad_id, "attention_mask": 0}
        rows = {k: torch.cat([pad_columns(batches[r][k], seq, fill) for r in roles]) for k, fill in fills.items()}
        capture = any(r in self.spec.capture for r in roles)
        _, lm, routing, _ = self._run(rows, capture=capture, keep_grad=any(r in self.spec.capture_grad for r in roles),
                                      lb=False)
        outs, start = {}, 0
        for role in roles:
            batch = batches[role]
            n, s = (int(x) for x in batch["input_ids"].shape)
            part = slice(start, start + n)
            mine = routing.rows(part, s) if routing is not None and role in self.spec.capture else None
            outs[role] = ForwardOut(lm.rows_of(part, s), None, mine, self._retain_weights(role, batch, mine), batch)
            start += n
        return outs

    def autocast(self) -> Any:
        """The autocast of train.precision (bf16 / fp16) around every forward, also those run before
        accelerate wraps the model (reference quantities must see the numbers training sees)."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.settings.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Forwards inside run with the ORIGINAL values of the trained parameters.

        LoRA: adapters disabled. Otherwise the kept originals (one copy of the trained
        parameters, see Trainable.keep_originals) are swapped in.
        """
        self._in_reference += 1
        try:
            if self.lora:
                with self.model.disable_adapter():
                    yield
                return
            if self.trainable is None:
                raise RuntimeError("ctx.reference() needs the trained parameter set; the engine builds it before training")
            with self.trainable.swapped_to_originals(model=self.model):
                yield
        finally:
            self._in_reference -= 1

    def _reference_head(self) -> tuple[Callable[[], Any], ...]:
        """Inside reference(): what restores the ORIGINAL LM head when a reference forward's
        logit rows are computed later (after the block), if the head trains."""
        if not self._in_reference:
            return ()
        if self.lora:
            return (self.model.disable_adapter,)
        head = [p for p in output_embedding(self.model).parameters() if self.trainable.trains(p)]
        return (lambda: self.trainable.swapped_to_originals(only=head, model=self.model),) if head else ()

    def split_size(self, role: str) -> int:
        return len(self.splits[role])

    def iter_split(self, role: str, batch_size: int | None = None) -> Iterator[Batch]:
        """This process's rows of a training split, in order, on the device (for statistics and
        reference quantities): global batches of batch_size x processes examples, each cut into
        per-process row blocks (core.dist.shard_rows). Sums over them must be reduced with
        core.dist.all_reduce_sum; a placeholder row carries index -1."""
        examples = self.splits[role]
        bs = (batch_size or self.settings.batch_size) * world_size()
        for start in range(0, len(examples), bs):
            batch = collate(list(examples[start : start + bs]), self.pad_id)
            yield to_device(shard_rows(batch), self.device)

    @property
    def pad_id(self) -> int:
        return pad_id(self.tokenizer)
