"""What "forgotten" means: the forget set scored no better than by a model that never saw it.

The retrain oracle (the same recipe trained without the forget set) is the gold standard. It
still beats chance on the forget items (it knows the domain, so four-way items are partly
solved by elimination; docs/evaluation.md gives the numbers), so a fixed chance-level target
lies below what genuine forgetting reaches and makes every method over-train.

A run has forgotten when, on the same items and eval settings, its forget MC accuracy is at
most the upper end of the oracle's 95% interval and its forget NLL at least the lower end of
the oracle's. Where no oracle exists (a user's own data) the holdout split, facts of the same
kind the model never trained on, stands in for it, scored by the same model; the result says
which reference it used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.intervals import difference_interval, interval
from moe_unlearn.eval.metric import MetricResult, metric

# the forget numbers judged, and the side of the reference's interval forgetting must reach
TARGETS = {"mc_acc": "at_most", "nll": "at_least"}
# compared with the reference in the report (gap and its interval), beyond the targets
COMPARED = ("mc_acc", "nll", "token_acc")


@dataclass(frozen=True)
class ForgetTarget:
    """Forget MC at most `mc_at_most` and forget NLL at least `nll_at_least` (the reference's interval ends)."""

    reference: str  # "oracle" or "holdout"
    mc_at_most: float | None
    nll_at_least: float | None

    def reached(self, forget: Mapping[str, Any]) -> bool:
        """True when every bound with a value is met by the forget split's aggregates."""
        checks = []
        if self.mc_at_most is not None and isinstance(forget.get("mc_acc"), (int, float)):
            checks.append(forget["mc_acc"] <= self.mc_at_most)
        if self.nll_at_least is not None and isinstance(forget.get("nll"), (int, float)):
            checks.append(forget["nll"] >= self.nll_at_least)
        return bool(checks) and all(checks)


def target_from(per_example: Mapping[str, Sequence[float]], reference: str) -> ForgetTarget | None:
    """The target set by a reference's per-item forget MC correctness and NLL (None without either)."""
    mc = interval(per_example.get("mc_acc") or [])
    nll = interval(per_example.get("nll") or [])
    if mc is None and nll is None:
        return None
    return ForgetTarget(reference, mc[1] if mc else None, nll[0] if nll else None)


def oracle_target(retrained: Mapping[str, Any] | None) -> ForgetTarget | None:
    """The target set by the retrain oracle's metrics.json (its forget split), None without one."""
    return target_from(((retrained or {}).get("per_example") or {}).get("forget") or {}, "oracle")


def holdout_target(results: Mapping[str, Any]) -> ForgetTarget | None:
    """The stated proxy without an oracle: the same model's holdout split in `results` (metrics.json layout)."""
    return target_from(((results.get("per_example") or {}).get("holdout")) or {}, "holdout")


def _reference(ctx: EvalContext) -> tuple[str, dict[str, list[float]]]:
    per = ((ctx.retrained or {}).get("per_example") or {}).get("forget") or {}
    if any(per.get(name) for name in TARGETS):
        return "oracle", per
    return "holdout", {name: r.per_example for name in COMPARED
                       if (r := ctx.result(name, "holdout")) is not None and r.value is not None}


@metric("forgotten", higher_is_better=True, scope="global",
        detail_keys=("reference", "mc_at_most", "nll_at_least", *COMPARED))
def forgotten(ctx: EvalContext) -> MetricResult | None:
    """1 when forget MC and NLL reach the retrain oracle's 95% interval (the holdout split's without an oracle)."""
    reference, ref = _reference(ctx)
    target = target_from(ref, reference)
    if target is None:
        return None
    own = {name: r for name in COMPARED if (r := ctx.result(name, "forget")) is not None and r.value is not None}
    details: dict[str, Any] = {"reference": reference, "mc_at_most": target.mc_at_most,
                               "nll_at_least": target.nll_at_least}
    for name, res in own.items():
        theirs = ref.get(name)
        if not theirs:
            continue
        paired = reference == "oracle" and len(theirs) == len(res.per_example)
        diff = difference_interval(res.per_example, theirs, paired=paired)
        if diff is not None:
            details[name] = {"gap": diff[0], "gap_ci": [diff[1], diff[2]], "paired": paired,
                             "inside_noise": diff[1] <= 0.0 <= diff[2]}
    reached = target.reached({name: r.value for name, r in own.items()})
    return MetricResult(float(reached), [], details)
