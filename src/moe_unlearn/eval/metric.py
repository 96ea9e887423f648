"""The metric protocol and the `METRICS` registry.

A metric is one function. Split metrics (`scope="split"`) run once per eval set
(forget / retain / holdout) as `fn(ctx, split)`; global metrics run once as `fn(ctx)`.
Both return a `MetricResult` (aggregate, per-example values, extra details) or None when the
data it needs is absent (e.g. no MC questions in a split).

Where a result lands in metrics.json is declared on the metric (`group`, `value_key`,
`detail_keys`), so the runner places every metric the same way:
  split metric, no group:  out[split][name] = value; out[split][f"{name}_{key}"] = details[key]
  split metric, group G:   out[G][name][split] = value; out[G][key][split] = details[key]
  global metric, no group: out[name] = {value_key: value, **details}
  global metric, group G:  out[G][name] = {value_key: value, **details}
and per-example values under out["per_example"][split][name] (split) or out["per_example"][name].
eval/schema.py generates every key path of metrics.json from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from moe_unlearn.registry import Registry
from moe_unlearn.vocab import SPLITS


@dataclass
class MetricResult:
    """value: the aggregate; per_example: one number per example; details: JSON-able extras."""

    value: float | None
    per_example: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A registered metric. higher_is_better is stated for knowledge kept (retain direction):
    on the forget set an unlearned model should move the other way."""

    name: str
    fn: Callable[..., MetricResult | None]
    higher_is_better: bool
    scope: Literal["split", "global"]
    # False when the result depends on more than (model, data, config), e.g. the original routing
    cacheable: bool = True
    description: str = ""
    # the eval sets a split metric runs on (others report None)
    splits: tuple[str, ...] = SPLITS
    # where the result goes in metrics.json (see the module docstring)
    group: str | None = None
    value_key: str = "value"
    # the details readers may use (eval/schema.py); a grouped split metric places exactly these
    # (None when absent), the others place every detail they return
    detail_keys: tuple[str, ...] = ()
    # False: needs the whole model in one process (refused under a multi-process launch)
    multi_process: bool = True


METRICS: Registry[Metric] = Registry("metric", package="moe_unlearn.eval")


def metric(
    name: str,
    *,
    higher_is_better: bool,
    scope: Literal["split", "global"] = "split",
    cacheable: bool = True,
    splits: tuple[str, ...] = SPLITS,
    group: str | None = None,
    value_key: str = "value",
    detail_keys: tuple[str, ...] = (),
    multi_process: bool = True,
) -> Callable[[Callable[..., MetricResult | None]], Callable[..., MetricResult | None]]:
    """Decorator: register fn under `name` in METRICS (first docstring line = description)."""

    def add(fn: Callable[..., MetricResult | None]) -> Callable[..., MetricResult | None]:
        doc = (fn.__doc__ or "").strip().splitlines()
        METRICS.register(name)(Metric(
            name, fn, higher_is_better, scope, cacheable, doc[0] if doc else "", splits, group, value_key, detail_keys,
            multi_process))
        return fn

    return add
