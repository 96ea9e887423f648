"""Name the parameters to train with short specs, MoE-aware (one expert of a fused tensor).

Specs (combined by union, deduplicated, returned in model order):
  all               every parameter (correction-bias tensors excepted: never trained)
  routers           each MoE router's [E, d] weight and trainable [E] bias
  experts           each MoE layer's fused routed-expert tensors
  shared_experts    the always-on shared experts (and their gates)
  attention         parameters under an attention module (self_attn / attention / attn)
  embeddings        the input and output embedding matrices
  layers:0-3        everything in decoder layers 0..3 (also layers:1,3 and layers:2)
  expert:L:E        expert E of MoE layer L: one ParamRef per fused [E, ...] tensor, expert=E
  regex:PATTERN     parameters whose name matches PATTERN (re.search)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from torch import nn

from moe_unlearn.errors import UserError
from moe_unlearn.models.archs import CORRECTION_BIAS_NAMES
from moe_unlearn.models.layout import MoELayer, moe_layers

SPEC_FORMS = ("all, routers, experts, shared_experts, attention, embeddings, layers:0-3, layers:1,3, "
              "expert:L:E, regex:PATTERN")
_ATTENTION = re.compile(r"(^|\.)(self_attn|self_attention|attention|attn)\.")
_LAYER = re.compile(r"(^|\.)(layers|h|blocks)\.(\d+)\.")


@dataclass(frozen=True, eq=False)
class ParamRef:
    """A parameter to train; `expert` set means only slice [expert] of its fused dim 0."""

    name: str
    param: nn.Parameter
    expert: int | None = None


Picked = list[tuple[nn.Parameter, int | None]]


def _module_params(modules: list[nn.Module]) -> Picked:
    return [(p, None) for m in modules for p in m.parameters()]


def _routers(model: nn.Module, layers: list[MoELayer], arg: str) -> Picked:
    out: Picked = []
    for layer in layers:
        out.append((layer.router_weight, None))
        if layer.router_bias is not None:
            out.append((layer.router_bias, None))
    return out


def _experts(model: nn.Module, layers: list[MoELayer], arg: str) -> Picked:
    return _module_params([layer.experts for layer in layers])


def _shared(model: nn.Module, layers: list[MoELayer], arg: str) -> Picked:
    return _module_params([m for layer in layers for n, m in layer.block.named_children() if n.startswith("shared_")])


def _by_name(predicate: Callable[[str], bool]) -> Callable[[nn.Module, list[MoELayer], str], Picked]:
    def pick(model: nn.Module, layers: list[MoELayer], arg: str) -> Picked:
        return [(p, None) for n, p in model.named_parameters() if predicate(n)]

    return pick


def _embeddings(model: nn.Module, layers: list[MoELayer], arg: str) -> Picked:
    getters = [getattr(model, "get_input_embeddings", None), getattr(model, "get_output_embeddings", None)]
    return _module_params([m for m in (g() for g in getters if g is not None) if isinstance(m, nn.Module)])


MAX_INDEX = 100_000  # no model has this many layers or experts; bounds what a spec may name


def _parse_ranges(arg: str, spec: str) -> list[tuple[int, int]]:
    """'0-3,5' -> [(0, 3), (5, 5)]: inclusive ranges, never expanded here (a range may be huge)."""
    ranges = []
    for part in arg.split(","):
        lo, dash, hi = part.partition("-")
        if not lo.isdecimal() or (dash and not hi.isdecimal()):
            raise UserError(f"bad parameter spec '{spec}': write layers:0-3 or layers:1,3")
        a, b = int(lo), int(hi) if dash else int(lo)
        if a > b:
            raise UserError(f"bad parameter spec '{spec}': range {a}-{b} runs backwards; write {b}-{a}")
        if b >= MAX_INDEX:
            raise UserError(f"bad parameter spec '{spec}': layer {b} is out of any model's range")
        ranges.append((a, b))
    return ranges


def _layers(model: nn.Module, layers: list[MoELayer], arg: str) -> Picked:
    found = {int(m.group(3)) for n, _ in model.named_parameters() if (m := _LAYER.search(n))}
    top = max(found, default=-1)
    wanted: set[int] = set()
    for lo, hi in _parse_ranges(arg, f"layers:{arg}"):
        if hi > top:
            first = max(lo, top + 1)
            shown = list(range(first, hi + 1)) if hi - first < 8 else f"{first}..{hi}"
            raise UserError(f"layers:{arg}: decoder layer(s) {shown} do not exist; valid 0..{top}")
        wanted.update(range(lo, hi + 1))
    missing = sorted(wanted - found)
    if missing:
        raise UserError(f"layers:{arg}: decoder layer(s) {missing} do not exist; valid 0..{top}")
    return [(p, None) for n, p in model.named_parameters() if (m := _LAYER.search(n)) and int(m.group(3)) in wanted]


def _expert(model: nn.Module, layers: list[MoELayer], arg: str) -> Picked:
    parts = arg.split(":")
    if len(parts) != 2 or not all(s.isdecimal() for s in parts):
        raise UserError(f"bad parameter spec 'expert:{arg}': write expert:L:E (MoE layer L, expert E), e.g. expert:0:3")
    li, ei = int(parts[0]), int(parts[1])
    if li >= len(layers):
        raise UserError(f"expert:{arg}: MoE layer {li} out of range 0..{len(layers) - 1}")
    layer = layers[li]
    if ei >= layer.num_experts:
        raise UserError(f"expert:{arg}: expert {ei} out of range 0..{layer.num_experts - 1} at MoE layer {li}")
    fused = [p for p in layer.experts.parameters() if p.dim() >= 1 and p.shape[0] == layer.num_experts]
    if not fused:
        raise UserError(f"expert:{arg}: {type(layer.experts).__name__} does not store experts as fused [E, ...] "
                        "tensors, so one expert cannot be sliced; use 'experts' or regex:")
    return [(p, ei) for p in fused]


def _regex(model: nn.Module, layers: list[MoELayer], arg: str) -> Picked:
    try:
        pattern = re.compile(arg)
    except re.error as e:
        raise UserError(f"regex:{arg} is not a valid regular expression: {e}") from None
    return [(p, None) for n, p in model.named_parameters() if pattern.search(n)]


# "name" for exact specs, "name:" for specs taking an argument.
_SELECTORS: dict[str, Callable[[nn.Module, list[MoELayer], str], Picked]] = {
    "all": _by_name(lambda n: True),
    "routers": _routers,
    "experts": _experts,
    "shared_experts": _shared,
    "attention": _by_name(lambda n: bool(_ATTENTION.search(n))),
    "embeddings": _embeddings,
    "layers:": _layers,
    "expert:": _expert,
    "regex:": _regex,
}


def check_specs(specs: list[str], where: str) -> None:
    """Refuse a malformed spec at config load, before any model is read (bounds are checked
    against the model by select_parameters)."""
    for spec in specs:
        head, sep, arg = spec.partition(":")
        if _SELECTORS.get(head + sep) is None or (sep and not arg):
            raise UserError(f"'{where}': unknown parameter spec '{spec}'; valid forms: {SPEC_FORMS}")
        if head == "layers":
            _parse_ranges(arg, spec)
        elif head == "expert":
            parts = arg.split(":")
            if len(parts) != 2 or not all(p.isdecimal() and int(p) < MAX_INDEX for p in parts):
                raise UserError(f"'{where}': bad parameter spec '{spec}': write expert:L:E (MoE layer L, expert E)")
        elif head == "regex":
            _regex(nn.Module(), [], arg)


def select_parameters(model: nn.Module, specs: list[str]) -> list[ParamRef]:
    """The parameters named by `specs`, deduplicated, in model order; UserError on a bad spec."""
    layers = moe_layers(model)
    names = {id(p): n for n, p in model.named_parameters()}
    picked: dict[tuple[int, int | None], nn.Parameter] = {}
    for spec in specs:
        head, sep, arg = spec.partition(":")
        selector = _SELECTORS.get(head + sep)
        if selector is None or (sep and not arg):
            raise UserError(f"unknown parameter spec '{spec}'; valid forms: {SPEC_FORMS}")
        for param, expert in selector(model, layers, arg):
            if names.get(id(param), "").rsplit(".", 1)[-1] not in CORRECTION_BIAS_NAMES:
                picked[(id(param), expert)] = param
    order = {pid: i for i, pid in enumerate(names)}
    keys = [k for k in picked if k[1] is None or (k[0], None) not in picked]  # a whole tensor covers its slices
    keys.sort(key=lambda k: (order.get(k[0], len(order)), -1 if k[1] is None else k[1]))
    return [ParamRef(names.get(pid, ""), picked[(pid, expert)], expert) for pid, expert in keys]
