"""The one schema of metrics.json: every key its writers put there and its readers take out.

Metric keys are generated from the metric declarations (eval/metric.py: scope, splits, group,
value_key, detail_keys, higher_is_better); the run's own keys (what ran, timing, memory, ...)
are declared in RUN_FIELDS below. Writers build the run fields with `run_metrics` and `timing`;
readers name a value with `metric_key` / `run_key` and read it with `Key.read`, so a key path
is spelled here and nowhere else. tests/eval/test_schema.py checks every key a module names.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, Callable, Sequence

from moe_unlearn.eval.context import SPLITS
from moe_unlearn.eval.metric import METRICS, Metric


@dataclass(frozen=True)
class Shape:
    """What a value must be for the report to read it (None is always allowed: not measured)."""

    check: Callable[[Any], bool]
    want: str


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(_is_number(x) for x in v)


def _matrix(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(_numbers(row) and len(row) == len(v[0]) > 0 for row in v)


def _before_after(v: Any) -> bool:
    return isinstance(v, dict) and _matrix(v.get("before")) and _matrix(v.get("after")) and \
        (len(v["before"]), len(v["before"][0])) == (len(v["after"]), len(v["after"][0]))


def _curve(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(p, dict) and _is_number(p.get("step"))
                                       and (p.get("token_acc") is None or _is_number(p.get("token_acc"))) for p in v)


NUMBER = Shape(_is_number, "a number")
STRING = Shape(lambda v: isinstance(v, str), "a string")
NAMES = Shape(lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v), "a list of names")
NUMBERS = Shape(_numbers, "a list of numbers")
BEFORE_AFTER = Shape(_before_after, "{before, after}: equal-shaped matrices")
CURVE = Shape(_curve, "a list of {step, token_acc}")


@dataclass(frozen=True)
class RunField:
    """A key of metrics.json that is not a metric's result: who writes it and what it holds."""

    path: str
    shape: Shape | None  # None: the report does not check it
    writer: str


RUN_FIELDS: dict[str, RunField] = {f.path: f for f in (
    RunField("method", STRING, "unlearn, eval (the config's method; None for a manifest)"),
    RunField("adapters", NAMES, "unlearn, eval"),
    RunField("benchmark", None, "unlearn (config key `benchmark`)"),
    RunField("steps", NUMBER, "unlearn (optimizer steps run); eval writes None"),
    RunField("model", None, "eval (--model)"),
    RunField("original", None, "eval (--original)"),
    RunField("reference", None, "benchmark oracle (\"original\" / \"oracle\" reference rows)"),
    RunField("run", None, "demo (the cell's label)"),
    RunField("seed", None, "demo (the run's seed)"),
    RunField("timing.total_seconds", NUMBER, "unlearn, eval: the command's wall time"),
    RunField("timing.step_seconds_median", None, "unlearn, eval: median optimizer-step time (0.0 without steps)"),
    RunField("memory.trainable_params", None, "unlearn"),
    RunField("memory.reference_bytes", None, "unlearn"),
    RunField("memory.optimizer_state_bytes", None, "unlearn"),
    RunField("processes", None, "unlearn"),
    RunField("adapter_info", None, "unlearn: each adapter's summary()"),
    RunField("early_stop", None, "unlearn"),
    RunField("retain_guard", None, "unlearn with train.early_stop.retain_kept: floor, final retain MC, restored step"),
    RunField("resumed", None, "unlearn"),
    RunField("eval_seconds", None, "the eval runner"),
    RunField("metric_info", None, "the eval runner: {metric: {higher_is_better, description}}"),
    RunField("per_example", None, "the eval runner"),
    RunField("samples", None, "the eval runner: generated answers of a few examples"),
)}
# run fields that open metrics.json (before the results); the rest close it
_HEAD = ("method", "adapters", "benchmark", "steps", "model", "original")

# the details the report checks before it reads them (a metric's other details are its own)
DETAIL_SHAPES: dict[tuple[str, str], Shape] = {
    ("stability", "per_layer"): NUMBERS,
    **{("activation", split): BEFORE_AFTER for split in SPLITS},
    ("replay", "without.token_acc"): NUMBER,
    ("replay", "with_replay.token_acc"): NUMBER,
    ("relearn", "curve"): CURVE,
}


def metric_path(m: Metric, split: str | None = None, detail: str | None = None) -> tuple[str, ...]:
    """Where metric m's value (or one of its details, dotted) lands in metrics.json; the runner's
    placement (eval/runner.py place_split / place_global) as eval/metric.py declares it."""
    rest = tuple(detail.split(".")) if detail else ()
    if m.scope == "split":
        if split is None:
            raise ValueError(f"split metric '{m.name}' needs a split")
        if m.group is not None:
            return (m.group, rest[0] if rest else m.name, split, *rest[1:])
        return (split, f"{m.name}_{rest[0]}", *rest[1:]) if rest else (split, m.name)
    if split is not None:
        raise ValueError(f"global metric '{m.name}' has no split")
    head = (m.name,) if m.group is None else (m.group, m.name)
    return (*head, *(rest or (m.value_key,)))


@dataclass(frozen=True)
class Key:
    """One value of metrics.json a reader uses: a metric's value or detail, or a run field.
    Resolved against the declarations on first use (ValueError when it is not declared)."""

    metric: str | None = None
    split: str | None = None
    detail: str | None = None
    field: str | None = None  # a run field's dotted path (metric None)

    @cached_property
    def path(self) -> tuple[str, ...]:
        if self.metric is None:
            if self.field not in RUN_FIELDS:
                raise ValueError(f"'{self.field}' is no run field of metrics.json; declare it in eval/schema.py")
            return tuple(str(self.field).split("."))
        m = METRICS.get(self.metric)
        if self.split is not None and self.split not in m.splits:
            raise ValueError(f"metric '{m.name}' does not run on split '{self.split}'")
        if self.detail and self.detail.split(".")[0] not in m.detail_keys:
            raise ValueError(f"'{self.detail}' is no declared detail of metric '{m.name}' (detail_keys of its @metric)")
        return metric_path(m, self.split, self.detail)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def higher_is_better(self) -> bool | None:
        """The declared direction for knowledge kept; None for a run field."""
        return None if self.metric is None else METRICS.get(self.metric).higher_is_better

    @property
    def shape(self) -> Shape | None:
        if self.metric is None:
            return RUN_FIELDS[self.field].shape if self.field in RUN_FIELDS else None
        if self.detail:
            return DETAIL_SHAPES.get((self.metric, self.detail))
        return NUMBER  # MetricResult.value

    def arrow(self, *, forget: bool | None = None) -> str:
        """'↑' / '↓': the direction an ideal unlearning moves this number. On the forget side (the
        forget split, or forget=True for a global value measured on forget data) it is the
        opposite of the declared direction."""
        up = self.higher_is_better
        if up is None:
            return ""
        if self.split == "forget" if forget is None else forget:
            up = not up
        return "↑" if up else "↓"

    def read(self, metrics: Any) -> Any:
        """The value in a metrics.json dict, None where any level is missing."""
        node = metrics
        for part in self.path:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    __call__ = read  # a key is a column getter


def metric_key(name: str, split: str | None = None, detail: str | None = None) -> Key:
    """The key of a metric's value on a split (None for a global metric) or of one of its declared details."""
    return Key(metric=name, split=split, detail=detail)


def run_key(path: str) -> Key:
    """The key of a run field (RUN_FIELDS)."""
    return Key(field=path)


# the routing group's keys, named once: the report, plots, model card and `eval` read them here
STABILITY = {s: metric_key("stability", s) for s in SPLITS}
PER_LAYER = {s: metric_key("stability", s, "per_layer") for s in SPLITS}
ACTIVATION = {s: metric_key("activation", detail=s) for s in SPLITS}


def metric_keys() -> list[Key]:
    """Every metric value key the declarations generate: each split metric on each of its splits,
    each global metric once (details are read through metric_key)."""
    out = []
    for name in METRICS.names():
        m = METRICS.get(name)
        out += [metric_key(name, s) for s in m.splits] if m.scope == "split" else [metric_key(name)]
    return out


@cache
def checked_keys() -> tuple[Key, ...]:
    """The keys whose type the report checks before it reads a metrics.json."""
    runs = [run_key(p) for p, f in RUN_FIELDS.items() if f.shape is not None]
    details = []
    for name, detail in DETAIL_SHAPES:
        m = METRICS.get(name)
        splits = m.splits if m.scope == "split" else (None,)
        details += [metric_key(name, split, detail) for split in splits]
    return (*runs, *metric_keys(), *details)


def timing(total_seconds: float, step_seconds: Sequence[float] = ()) -> dict[str, float]:
    """metrics.json `timing`, the same for every writer: the command's wall time and the median
    optimizer-step time (0.0 when no step ran, as for `moe-unlearn eval`)."""
    median = statistics.median(step_seconds) if step_seconds else 0.0
    return {"step_seconds_median": median, "total_seconds": total_seconds}


def run_metrics(results: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """metrics.json: the run fields that open it, the evaluation results, then the other run
    fields. Each field must be a declared run field (its first dotted part)."""
    known = {p.split(".")[0] for p in RUN_FIELDS}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"'{unknown[0]}' is no run field of metrics.json; declare it in eval/schema.py")
    head = {k: fields[k] for k in _HEAD if k in fields}
    return {**head, **results, **{k: v for k, v in fields.items() if k not in head}}
