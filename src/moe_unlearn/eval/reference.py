"""The retrained reference: reading a retain-only model's metrics.json, and the distance to it.

A retrained model (trained without the forget set: TOFU's retain model, MUSE's retrained
model, the embedded benchmark's oracle) is what perfect unlearning would produce. Its
metrics.json, evaluated with the same eval settings on the same data, feeds PrivLeak's
retrained AUC (privacy), TOFU's forget quality (forget_quality) and `oracle_distance`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moe_unlearn.errors import UserError
from moe_unlearn.paths import MAX_SIDE_FILE, regular_file
from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import nanmean

DISTANCE_SPLITS = ("forget", "holdout")


def read_retrained(path: str | Path, *, option: str = "--retrained") -> dict[str, Any]:
    """A retain-only model's metrics.json; UserError unless it holds forget results."""
    checked = regular_file(path, option, max_bytes=MAX_SIDE_FILE)  # a FIFO or device is never opened
    try:
        ref = json.loads(checked.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{option} {path} is not a readable metrics.json ({type(e).__name__})") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("forget"), dict):
        raise UserError(f"{option} {path} has no 'forget' results; pass the metrics.json of a retain-only model's run")
    return ref


@metric("oracle_distance", higher_is_better=False, scope="global",
        detail_keys=("mc_acc", "nll", "delta", "warning"))
def oracle_distance(ctx: EvalContext) -> MetricResult | None:
    """Distance to the retrained model: mean |delta| of forget and holdout MC accuracy (details: NLL, signed deltas)."""
    if not ctx.retrained:
        return None
    delta: dict[str, dict[str, float]] = {}
    mismatch = []
    for split in DISTANCE_SPLITS:
        theirs = ctx.retrained.get(split) or {}
        for name in ("mc_acc", "nll"):
            own = ctx.result(name, split)
            if own is None or own.value is None or not isinstance(theirs.get(name), (int, float)):
                continue
            n_ref = len(((ctx.retrained.get("per_example") or {}).get(split) or {}).get(name) or [])
            if n_ref and n_ref != len(own.per_example):
                mismatch.append(f"{split}.{name}")
            delta.setdefault(split, {})[name] = own.value - float(theirs[name])
    if not delta:
        return None
    mc = nanmean([abs(d["mc_acc"]) for d in delta.values() if "mc_acc" in d])
    nll = nanmean([abs(d["nll"]) for d in delta.values() if "nll" in d])
    details: dict[str, Any] = {"mc_acc": mc, "nll": nll, "delta": delta}
    if mismatch:
        details["warning"] = f"the reference was evaluated on other examples ({', '.join(mismatch)})"
    return MetricResult(mc, [], details)
