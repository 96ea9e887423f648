"""Generic discovery of a model's MoE layers: router, experts, shared experts, E and k.

Routers are found from the model's own declaration
`_can_record_outputs["router_logits"] = OutputRecorder(RouterClass, index=i[, layer_name])`
(searched on every PreTrainedModel inside the model, so Llama4's inner text model counts).
The MoE block is the router's parent and holds `experts`. Architecture differences live in
`models/archs.py`, nowhere else.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from moe_unlearn.errors import UserError
from moe_unlearn.models.archs import ARCH_RULES, CORRECTION_BIAS_NAMES, SHARED_EXPERT_NAMES, TOP_K_NAMES, ArchRule


@dataclass
class MoELayer:
    """One MoE block. `router` / `experts` are the innermost modules (below any peft wrapper)."""

    index: int
    name: str
    block: nn.Module
    router: nn.Module
    router_name: str
    experts: nn.Module
    experts_name: str
    shared_experts: nn.Module | None
    num_experts: int
    top_k: int
    logits_index: int = 0
    rule: ArchRule = ArchRule()

    @property
    def router_weight(self) -> nn.Parameter:
        """The router's [E, d] weight."""
        return _router_weight(self.router, self.num_experts)

    @property
    def router_bias(self) -> nn.Parameter | None:
        """A trainable [E] score bias (GPT-OSS) or None."""
        bias = getattr(self.router, "bias", None)
        if bias is None:
            linear = _router_linear(self.router)
            bias = None if linear is None else linear.bias
        return bias if isinstance(bias, nn.Parameter) and bias.shape == (self.num_experts,) else None

    @property
    def correction_bias(self) -> torch.Tensor | None:
        """A selection-only [E] bias buffer (DeepSeek-V3 style) or None; never trained."""
        for module in (self.router, self.block):
            for name, tensor in [*module.named_buffers(), *module.named_parameters()]:
                if name.rsplit(".", 1)[-1] in CORRECTION_BIAS_NAMES:
                    return tensor
        return None


def unwrap(module: nn.Module) -> nn.Module:
    """The module below any peft `.base_layer` wrappers."""
    while isinstance(getattr(module, "base_layer", None), nn.Module):
        module = module.base_layer
    return module


def _router_linear(router: nn.Module) -> nn.Linear | None:
    children = [m for m in router.children() if isinstance(unwrap(m), nn.Linear)]
    return unwrap(children[0]) if len(children) == 1 else None  # type: ignore[return-value]


def _router_weight(router: nn.Module, num_experts: int | None = None) -> nn.Parameter:
    weight = getattr(router, "weight", None)
    if not isinstance(weight, nn.Parameter):
        linear = _router_linear(router)
        weight = None if linear is None else linear.weight
    if not isinstance(weight, nn.Parameter) or len(whole_shape(weight)) != 2:
        raise ValueError(f"router {type(router).__name__} has no [E, d] weight")
    if num_experts is not None and whole_shape(weight)[0] != num_experts:
        raise ValueError(f"router weight shape {tuple(whole_shape(weight))} does not match E={num_experts}")
    return weight


def whole_shape(param: torch.Tensor) -> tuple[int, ...]:
    """A parameter's whole shape (DeepSpeed ZeRO-3 keeps it in ds_shape; the tensor is a partition)."""
    return tuple(getattr(param, "ds_shape", param.shape))


def _strip_wrappers(path: str) -> str:
    return path.replace(".base_layer", "")


def _router_recorders(model: nn.Module) -> list[tuple[str, nn.Module, object]]:
    """(prefix, PreTrainedModel submodule, OutputRecorder) for every router_logits declaration."""
    found = []
    for prefix, sub in model.named_modules():
        record = getattr(type(sub), "_can_record_outputs", None) if isinstance(sub, PreTrainedModel) else None
        spec = (record or {}).get("router_logits")
        if spec is None:
            continue
        for rec in spec if isinstance(spec, (list, tuple)) else [spec]:
            found.append((prefix, sub, rec))
    return found


def _matches(module: nn.Module, path: str, rec: object) -> bool:
    target = getattr(rec, "target_class", None)
    class_name = getattr(rec, "class_name", None)
    if target is not None and not isinstance(module, target):
        return False
    if target is None and (class_name is None or not type(module).__name__.endswith(class_name)):
        return False
    layer_name = getattr(rec, "layer_name", None)
    return layer_name is None or path.endswith(layer_name)


def _find_top_k(router: nn.Module, block: nn.Module, experts: nn.Module, config: object) -> int:
    for module in (router, block, experts):
        for attr in TOP_K_NAMES:
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    for attr in TOP_K_NAMES:
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find top-k for router {type(router).__name__}")


def _discover(model: nn.Module) -> list[MoELayer]:
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    layers: list[MoELayer] = []
    seen: set[int] = set()
    for prefix, sub, rec in _router_recorders(model):
        for rel, module in sub.named_modules():
            path = f"{prefix}.{rel}" if prefix and rel else (prefix or rel)
            if id(module) in seen or not _matches(module, _strip_wrappers(path), rec) or "." not in path:
                continue
            block_path = _strip_wrappers(path).rsplit(".", 1)[0]
            block = modules.get(block_path)
            experts_wrapped = getattr(block, "experts", None)
            if block is None or not isinstance(experts_wrapped, nn.Module):
                continue
            try:
                num_experts = whole_shape(_router_weight(module))[0]
                top_k = _find_top_k(module, block, unwrap(experts_wrapped), getattr(model, "config", None))
            except ValueError:
                continue
            seen.add(id(module))
            shared = next((getattr(block, n) for n in SHARED_EXPERT_NAMES
                           if isinstance(getattr(block, n, None), nn.Module)), None)
            layers.append(MoELayer(
                index=-1, name=block_path, block=block, router=module, router_name=path,
                experts=unwrap(experts_wrapped), experts_name=names[id(unwrap(experts_wrapped))], shared_experts=shared,
                num_experts=int(num_experts), top_k=int(top_k), logits_index=int(getattr(rec, "index", 0) or 0),
                rule=ARCH_RULES.get(type(module).__name__, ArchRule()),
            ))
    order = {id(m): i for i, m in enumerate(modules.values())}
    layers.sort(key=lambda layer: order[id(layer.block)])
    for i, layer in enumerate(layers):
        layer.index = i
    return layers


_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], list[MoELayer]]]" = weakref.WeakKeyDictionary()


def moe_layers(model: nn.Module) -> list[MoELayer]:
    """Every MoE layer of `model` in forward order; UserError if there is none.

    Cached per model; the cache is rebuilt when the module tree changes (e.g. peft wrapping).
    """
    key = tuple(id(m) for m in model.modules())
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    layers = _discover(model)
    if not layers:
        raise UserError(
            f"{type(model).__name__} has no MoE layers (no router declared in _can_record_outputs"
            "['router_logits'] with a sibling 'experts' module); use a Mixture-of-Experts model"
        )
    _CACHE[model] = (key, layers)
    return layers
