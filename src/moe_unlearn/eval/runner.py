"""The evaluation runner: every configured metric on one model, as one JSON-able dict.

Output layout (the unlearn command's metrics.json keys plus the rest):
  forget / retain / holdout: {metric: aggregate, metric_detail: ...}  (split metrics; nll and
                              mc_acc always present, None where a split lacks the data)
  routing: {"stability": {split: float | None}, "per_layer": {split: [L floats]}, "activation": {...}}
                              (metrics with group="routing", see eval/metric.py)
  <global metric>: {"value": aggregate, ...details}   (replay, privacy, relearn, lm_eval, ...)
  per_example: {split: {metric: [floats]}, <global metric>: [floats]}
  metric_info: {metric: {"higher_is_better": bool, "description": str}}
  eval_seconds: float
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from moe_unlearn.core.dist import world_size
from moe_unlearn.errors import UserError
from moe_unlearn.eval.config import EvalConfig
from moe_unlearn.eval.context import SPLITS, EvalCache, EvalContext, eval_mode
from moe_unlearn.eval.metric import METRICS, Metric, MetricResult

ALWAYS = ("nll", "mc_acc", "stability")  # the engine's metrics.json contract


def check_processes(cfg: EvalConfig) -> None:
    """Refuse, before any work, metrics that need the whole model in one process under a launch of several."""
    if world_size() > 1:
        single = [m for m in cfg.metrics if not METRICS.get(m).multi_process]
        if single:
            raise UserError(f"eval metric(s) {', '.join(single)} run in a single process; drop them from "
                            "eval.metrics here and run `moe-unlearn eval` on the saved model in one process")


def capture_eval_routing(
    model: torch.nn.Module, tokenizer: Any, data: Any, cfg: EvalConfig, *, progress: bool = False,
    cache: EvalCache | None = None,
) -> dict[str, Any]:
    """Routing of `model` (usually the original) on the forget/retain/holdout QA eval sets.

    Same deterministic batches as evaluate_model, so stability and replay line up token by token.
    Returns {split: RoutingCapture} for the splits that have QA records. With a cache, the same
    weights on the same data are captured once (every run of the demo starts from one model).
    """
    ctx = EvalContext(model, tokenizer, data, cfg, progress=progress, cache=cache)

    def capture() -> dict[str, Any]:
        with eval_mode(model):
            passes = {s: ctx.qa_pass(s) for s in SPLITS}
        return {s: p.routing for s, p in passes.items() if p is not None}

    return ctx.cached("original_routing", "-", capture)


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    data: Any,
    cfg: EvalConfig,
    *,
    original_routing: dict[str, Any] | None = None,
    original_model: torch.nn.Module | None = None,
    retrained: dict[str, Any] | None = None,
    cache: EvalCache | None = None,
    progress: bool = True,
    splits: tuple[str, ...] = SPLITS,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Run cfg.metrics (plus nll, mc_acc and stability) on `model`; see the module docstring for the layout.

    splits: the splits split metrics run on (the others' values are None); the engine's periodic
    eval skips the holdout split when an oracle, not the holdout, judges forgetting.

    original_routing (from capture_eval_routing on the original model) enables stability,
    activation and replay; original_model is captured here when no routing is given.
    retrained: metrics.json of a retain-only model (forget quality, PrivLeak reference AUC).
    fingerprint: model_fingerprint(model) when the caller has it (the cache's key; saves hashing the weights again).
    """
    start = time.perf_counter()
    check_processes(cfg)
    if original_routing is None and original_model is not None:
        original_routing = capture_eval_routing(original_model, tokenizer, data, cfg, progress=progress)
    ctx = EvalContext(
        model, tokenizer, data, cfg, original_routing=original_routing, retrained=retrained, progress=progress, cache=cache,
        fingerprint=fingerprint,
    )
    out: dict[str, Any] = {s: {} for s in SPLITS}
    out["per_example"] = {s: {} for s in SPLITS}
    out["metric_info"] = {}
    names = list(ALWAYS) + [m for m in cfg.metrics if m not in ALWAYS]
    with eval_mode(model):
        for name in names:
            m = METRICS.get(name)
            out["metric_info"][name] = {"higher_is_better": m.higher_is_better, "description": m.description}
            if m.scope == "split":
                for split in SPLITS:
                    run = split in m.splits and split in splits
                    place_split(out, m, split, ctx.result(name, split) if run else None)
            else:
                place_global(out, m, ctx.result(name))
    out["eval_seconds"] = time.perf_counter() - start
    return jsonable(out)


def place_split(out: dict[str, Any], m: Metric, split: str, res: MetricResult | None) -> None:
    """Put one split metric's result where the metric declares (eval/metric.py)."""
    details = res.details if res else {}
    if m.group is not None:
        group = out.setdefault(m.group, {})
        group.setdefault(m.name, {})[split] = res.value if res else None
        for key in m.detail_keys:
            group.setdefault(key, {})[split] = details.get(key)
    else:
        out[split][m.name] = res.value if res else None
        for key, value in details.items():
            if key != "samples":
                out[split][f"{m.name}_{key}"] = value
    if details.get("samples"):
        out.setdefault("samples", {}).setdefault(split, {})[m.name] = details["samples"]
    if res and res.per_example:
        out["per_example"][split][m.name] = res.per_example


def place_global(out: dict[str, Any], m: Metric, res: MetricResult | None) -> None:
    """Put one global metric's result where the metric declares (absent when it did not run)."""
    if res is None:
        return
    target = out if m.group is None else out.setdefault(m.group, {})
    target[m.name] = {m.value_key: res.value, **res.details}
    if res.per_example:
        out["per_example"][m.name] = res.per_example


def jsonable(obj: Any) -> Any:
    """Plain JSON types; nan/inf -> None, tensors -> lists."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj
