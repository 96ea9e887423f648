"""The decoder layers of a causal LM and the output of one of them.

`output_hidden_states` is not "the output of each decoder layer": in transformers 5 its last
entry is taken AFTER the final norm. Methods that steer or match one layer's activations (RMU)
read the layer's own output here, through a forward hook on that decoder layer.

Decoder layers are found from the model's own declaration
`_can_record_outputs["hidden_states"] = DecoderLayerClass` (what transformers itself records),
else from the usual `<base model>.layers` list.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn
from transformers import PreTrainedModel

from moe_unlearn.errors import UserError


def _declared_layer_classes(model: nn.Module) -> tuple[type, ...]:
    classes = []
    for sub in model.modules():
        record = getattr(type(sub), "_can_record_outputs", None) if isinstance(sub, PreTrainedModel) else None
        spec = (record or {}).get("hidden_states")
        for item in spec if isinstance(spec, (list, tuple)) else [spec]:
            cls = getattr(item, "target_class", item)  # an OutputRecorder or the class itself
            if isinstance(cls, type):
                classes.append(cls)
    return tuple(classes)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of `model` in forward order; UserError if none are found."""
    classes = _declared_layer_classes(model)
    layers = [m for m in model.modules() if classes and isinstance(m, classes)] if classes else []
    if not layers:
        base = model.get_decoder() if hasattr(model, "get_decoder") else None
        found = getattr(base, "layers", None)
        layers = list(found) if isinstance(found, nn.ModuleList) else []
    if not layers:
        raise UserError(f"cannot find the decoder layers of {type(model).__name__} (no _can_record_outputs"
                        "['hidden_states'] declaration and no .layers list)")
    return layers


@dataclass
class LayerOutput:
    """What the hook saw: one [B, S, d] tensor per forward call inside the `with` block."""

    outputs: list[torch.Tensor] = field(default_factory=list)

    @property
    def value(self) -> torch.Tensor:
        """The output of the last forward call (autograd graph kept)."""
        if not self.outputs:
            raise RuntimeError("no forward ran inside decoder_layer_output()")
        return self.outputs[-1]


@contextlib.contextmanager
def decoder_layer_output(model: nn.Module, index: int) -> Iterator[LayerOutput]:
    """Record the output hidden states of decoder layer `index` (0-based) of every forward inside."""
    layers = decoder_layers(model)
    if not 0 <= index < len(layers):
        raise UserError(f"decoder layer {index} does not exist; the model has {len(layers)} (0..{len(layers) - 1})")
    seen = LayerOutput()

    def hook(module: nn.Module, args: object, output: object) -> None:
        seen.outputs.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = layers[index].register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


class _Reached(Exception):
    """Raised by stop_after's hook: the rest of the forward is skipped."""


def _reached(module: nn.Module, args: object, output: object) -> None:
    raise _Reached


@contextlib.contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    """The forward inside the block ends once `module` has run (its earlier output hooks
    included): for a caller that reads nothing the rest of the model computes (RMU's decoder
    layer, GRIP's router inputs), at the cost of the layers up to it. Not for a collective forward
    (several processes, sharded parameters): every process must run all of it."""
    handle = module.register_forward_hook(_reached)
    try:
        yield
    except _Reached:
        pass
    finally:
        handle.remove()
