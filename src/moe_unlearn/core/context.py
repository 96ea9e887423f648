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
from moe_unlearn.core.trainable import Trainable
from moe_unlearn.data.splits import UnlearnData
from moe_unlearn.data.tokenize import collate, pad_id, to_device
from moe_unlearn.models import MoELayer, RoutingCapture, capture_routing, load_balancing_loss
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

    lm: ChunkedLogits
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

    @contextlib.contextmanager
    def recording(self) -> Iterator[dict[str, ForwardOut]]:
        """The training forwards inside the block, by role (the last one of each role wins)."""
        self._recording = {}
        try:
            yield self._recording
        finally:
            self._recording = None

    def forward(self, batch: Batch, *, role: Role, output_hidden_states: bool = False) -> ForwardOut:
        """Run the model on batch (no labels); capture routing and weigh retain tokens as the spec says."""
        training = role != "reference"
        lb = training and self.settings.load_balancing_coef > 0
        capture = training and role in self.spec.capture
        cm = (capture_routing(self.model, keep_grad=role in self.spec.capture_grad) if capture
              else contextlib.nullcontext())
        extra = {"output_router_logits": True} if lb else {}  # not every MoE class takes the flag
        inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      output_hidden_states=output_hidden_states, use_cache=False, **extra)
        contexts = (self.autocast, *self._reference_head())
        with cm as routing, self.autocast():
            out, lm = lm_forward(self.model, inputs, chunk=self.settings.loss_chunk, contexts=contexts)
        aux = None
        if lb and torch.is_grad_enabled() and getattr(out, "router_logits", None):
            layer = self.layers[0]
            aux = load_balancing_loss(out.router_logits, layer.num_experts, layer.top_k, batch["attention_mask"])
        weights = None
        if role == "retain" and self.spec.retain_weights is not None:
            w = self.spec.retain_weights(batch, routing)
            weights = None if w is None else normalise_weights(w.detach().float(), answer_mask(batch["labels"]))
        result = ForwardOut(lm, out.hidden_states if output_hidden_states else None,
                            routing, weights, batch, aux)
        if training and self._recording is not None:
            self._recording[role] = result
        return result

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
