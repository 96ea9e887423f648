"""The run context: what methods and adapters see of a run, and the one way to run the model.

`ctx.forward` runs the model WITHOUT labels, so transformers never folds the router
load-balancing loss into a loss a method might ascend; methods compute their losses from the
logits (methods/losses.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from moe_unlearn.data.tokenize import pad_id, to_device
from moe_unlearn.methods.base import Method
from moe_unlearn.methods.losses import answer_mask
from moe_unlearn.models import capture_routing
from moe_unlearn.train.trainable import Trainable

Batch = dict[str, torch.Tensor]


@dataclass
class ForwardOut:
    """One model forward of a step.

    logits [B, S, V]; hidden_states: tuple of [B, S, d] (embeddings, then each decoder layer)
    when asked; routing: RoutingCapture (gradients kept) when an adapter captures this role;
    token_weights [B, S] (retain role only, mean 1 over answer tokens) or None; aux_loss: the
    load-balancing loss when train.load_balancing_coef > 0.
    """

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None
    routing: Any
    token_weights: torch.Tensor | None
    batch: Batch
    aux_loss: torch.Tensor | None = None


def normalise_weights(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale [B, S] weights so they average 1 over the masked (answer) tokens."""
    m = mask.to(weights.dtype)
    return weights * (m.sum() / (weights * m).sum().clamp_min(1e-12))


@dataclass
class RunContext:
    model: nn.Module
    tokenizer: Any
    layers: list[Any]
    cfg: Any  # UnlearnConfig
    data: Any  # UnlearnData (eval sets)
    splits: dict[str, list[dict]]  # encoded training examples by role ("forget", "retain"), with index
    method: Method
    adapters: list[Any]
    accelerator: Any
    device: torch.device
    out_dir: Path
    step: int = 0
    original_routing: dict[str, Any] | None = None
    trainable: Trainable | None = None
    lora: bool = False
    # forwards of the current step by role, for adapters' loss_terms (cleared every step)
    forwards: dict[str, ForwardOut] = field(default_factory=dict)

    def capture_roles(self) -> frozenset[str]:
        roles: set[str] = set()
        for a in self.adapters:
            roles |= set(a.capture_roles())
        return frozenset(roles)

    def forward(self, batch: Batch, *, role: str, output_hidden_states: bool = False) -> ForwardOut:
        """Run the model on batch (no labels); record routing and retain token weights as needed."""
        lb = self.cfg.train.load_balancing_coef > 0 and role != "reference"
        capture = role != "reference" and role in self.capture_roles()
        # gradients through the captured logits only when an adapter puts a loss on them
        keep_grad = any(a.capture_grad and role in a.capture_roles() for a in self.adapters)
        cm = capture_routing(self.model, keep_grad=keep_grad) if capture else contextlib.nullcontext()
        extra = {"output_router_logits": True} if lb else {}  # not every MoE class takes the flag
        with cm as routing, self.autocast():
            out = self.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=output_hidden_states,
                use_cache=False,
                **extra,
            )
        aux = self._load_balancing(out, batch) if lb and torch.is_grad_enabled() else None
        weights = self._retain_weights(batch, routing) if role == "retain" else None
        result = ForwardOut(out.logits, out.hidden_states if output_hidden_states else None,
                            routing, weights, batch, aux)
        if role != "reference":
            self.forwards[role] = result
        return result

    def autocast(self) -> Any:
        """bf16 autocast when train.precision is bf16 (parameters stay in their dtype).

        Done with torch.autocast rather than Accelerator(mixed_precision=...): accelerate's
        state is a process-wide singleton whose precision cannot change between runs, and
        the demo runs many jobs in one process.
        """
        bf16 = self.cfg.train.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def _retain_weights(self, batch: Batch, routing: Any) -> torch.Tensor | None:
        """Product of every adapter's retain token weights, normalised to mean 1 on answers."""
        weights = None
        for a in self.adapters:
            w = a.retain_token_weights(self, batch, routing)
            if w is not None:
                weights = w.detach() if weights is None else weights * w.detach()
        if weights is None:
            return None
        return normalise_weights(weights.float(), answer_mask(batch["labels"]))

    def _load_balancing(self, out: Any, batch: Batch) -> torch.Tensor | None:
        """transformers' (Switch) load-balancing loss from this forward's router logits."""
        from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

        logits = getattr(out, "router_logits", None)
        if not logits:
            return None
        layer = self.layers[0]
        return load_balancing_loss_func(tuple(logits), layer.num_experts, layer.top_k, batch["attention_mask"])

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Forwards inside run with the ORIGINAL values of the trained parameters.

        LoRA: adapters disabled. Otherwise the kept originals (one copy of the trained
        parameters, see Trainable.keep_originals) are swapped in.
        """
        if self.lora:
            with self.model.disable_adapter():
                yield
            return
        assert self.trainable is not None
        with self.trainable.swapped_to_originals():
            yield

    def split_size(self, role: str) -> int:
        return len(self.splits[role])

    def iter_split(self, role: str, batch_size: int | None = None) -> Iterator[Batch]:
        """Batches of a training split in order (for reference quantities), on the device."""
        from moe_unlearn.data import collate

        examples = self.splits[role]
        bs = batch_size or self.cfg.data.batch_size
        for start in range(0, len(examples), bs):
            batch = collate(list(examples[start : start + bs]), self.pad_id)
            yield to_device(batch, self.device)

    @property
    def pad_id(self) -> int:
        return pad_id(self.tokenizer)
