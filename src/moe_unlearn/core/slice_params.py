"""Expert slices as module parameters of their own, for DeepSpeed ZeRO-3.

ZeRO-3's optimizer manages module parameters only (it partitions them and keeps their fp32
master copies), so the separate leaf a slice trains through elsewhere (core.trainable) cannot be
handed to it. Under ZeRO-3 each slice becomes a parameter of the module holding its fused
[E, ...] tensor, `<attr>_expert<e>`, which ZeRO-3 partitions and trains like any other: the
optimizer state is the slice's alone. The fused tensor is frozen. During each forward of the
module (from after ZeRO-3 has gathered its parameters until before it releases them) the
module's attribute reads a copy of the fused tensor whose rows are the slices, so gradients
reach the slices only. The copy shadows the parameter in the module's `__dict__`
(core.sharded.shadow): ZeRO-3 walks `_parameters` whenever a submodule (the experts'
activation) is released and needs its own parameters there. Before the model is saved each
slice is written into its row (`fold`) and its own parameter is left out of the saved weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from moe_unlearn.core.sharded import assign_full, full_tensor, shadow, unshadow
from moe_unlearn.core.trainable import READS_TRAINED_VALUES, Trainable


@dataclass
class SlicedTensor:
    """One fused tensor (module.<attr>) whose rows `experts` train as parameters `keys` of module."""

    module_name: str
    module: nn.Module
    attr: str
    experts: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    fused: nn.Parameter | None = None  # the module's own parameter, which each forward's copy shadows

    @property
    def names(self) -> list[str]:
        """The slice parameters' names in the model's state dict."""
        return [f"{self.module_name}.{k}" for k in self.keys]


def register(model: nn.Module, trainable: Trainable) -> list[SlicedTensor]:
    """Before the engine's prepare: each slice of `trainable` becomes a parameter of its module,
    trained whole (in trainable.full); its fused tensor is frozen and trainable keeps no slices."""
    tensors: dict[str, SlicedTensor] = {}
    for s in trainable.slices:
        module_name, attr = s.name.rsplit(".", 1)
        t = tensors.setdefault(s.name, SlicedTensor(module_name, model.get_submodule(module_name), attr))
        key = f"{attr}_expert{s.expert}"
        t.module.register_parameter(key, nn.Parameter(s.param.detach()[s.expert].clone()))
        t.experts.append(s.expert)
        t.keys.append(key)
        trainable.full[f"{module_name}.{key}"] = t.module._parameters[key]
        s.param.requires_grad_(False)
    trainable.slices = []
    return list(tensors.values())


def bind(tensors: list[SlicedTensor]) -> None:
    """After the engine's prepare (its gathering hooks run first, its releasing hooks last): each
    forward of a module sees its fused tensor with the slices as rows."""
    for t in tensors:
        t.fused = t.module._parameters[t.attr]
        compose = t.module.register_forward_pre_hook(lambda m, args, t=t: _compose(t))
        # a reference forward's swap of the slices for their originals must come first (core.trainable)
        t.module.__dict__.setdefault(READS_TRAINED_VALUES, set()).add(compose.id)
        t.module.register_forward_hook(lambda m, args, out, t=t: _restore(t), prepend=True, always_call=True)


def _compose(t: SlicedTensor) -> None:
    rows = torch.tensor(t.experts, device=t.fused.device)
    values = torch.stack([getattr(t.module, k) for k in t.keys])  # a reference forward's originals, if shadowed
    shadow(t.module, t.attr, t.fused.detach().index_put((rows,), values))  # differentiable in the slices


def _restore(t: SlicedTensor) -> None:
    unshadow(t.module, t.attr)


@torch.no_grad()
def fold(tensors: list[SlicedTensor]) -> None:
    """Write every slice into its row of the fused tensor (collective under ZeRO-3)."""
    for t in tensors:
        whole = full_tensor(t.fused).clone()
        for e, key in zip(t.experts, t.keys):
            whole[e] = full_tensor(t.module._parameters[key])
        assign_full(t.fused, whole)


def slice_names(tensors: list[SlicedTensor]) -> set[str]:
    """Every slice parameter's state-dict name (left out of the saved model)."""
    return {n for t in tensors for n in t.names}
