"""Results over seeds: runs grouped by cell (method + adapters), mean and spread per number.

The spread is the sample standard deviation (n - 1 in the denominator) over the seeds of a
cell; a cell with one seed has none. `summary.json` of `moe-unlearn demo --seeds N` holds,
per cell, every key of SUMMARY_KEYS as {mean, sd, min, max, n}; the report prints the same
columns as its per-run table, as "mean ± sd".
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable

from moe_unlearn.eval.schema import STABILITY, Key, metric_key, run_key
from moe_unlearn.report.format import format_value
from moe_unlearn.report.runs import Run, run_label

# the metrics.json values summarised per cell in summary.json (named there by their dotted path)
SUMMARY_KEYS: tuple[Key, ...] = (
    run_key("steps"), metric_key("mc_acc", "forget"), metric_key("nll", "forget"), metric_key("token_acc", "forget"),
    metric_key("mc_acc", "retain"), metric_key("nll", "retain"), metric_key("utility_mc"), *STABILITY.values(),
    metric_key("replay"), metric_key("privacy"), run_key("timing.total_seconds"),
)


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of one number over a cell's seeds."""

    mean: float
    sd: float | None  # None with one value
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "min": self.low, "max": self.high, "n": self.n}


def spread(values: list[float]) -> Spread | None:
    """Mean, sd (n - 1), min and max of the finite values; None when there are none."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else None
    return Spread(statistics.fmean(vals), sd, min(vals), max(vals), len(vals))


def seed_of(run: Run) -> Any:
    """The run's seed: metrics["seed"] (demo results), else its config.yaml's, else None."""
    if "seed" in run.metrics:
        return run.metrics["seed"]
    return (run.config or {}).get("seed")


def _settings(run: Run) -> str:
    """The run's config without what differs between seeds of one cell ('' when unknown)."""
    if not run.config:
        return ""
    return json.dumps({k: v for k, v in run.config.items() if k not in ("seed", "output_dir")}, sort_keys=True,
                      default=str)


def by_cell(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped into cells, in first-seen order: the same method + adapters and the same
    config apart from the seed. A cell never holds one seed twice (such runs start a new cell);
    cells that share a label are told apart as 'label [2]'."""
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for r in runs:
        label, settings = run_label(r.metrics, r.name), _settings(r)
        copy = 0
        while any(seed_of(m) == seed_of(r) for m in groups.get((label, settings, copy), [])):
            copy += 1
        groups.setdefault((label, settings, copy), []).append(r)
    cells: dict[str, list[Run]] = {}
    for (label, _, _), members in groups.items():
        name, i = label, 1
        while name in cells:
            i += 1
            name = f"{label} [{i}]"
        cells[name] = members
    return cells


def summarise(runs: list[Run], keys: tuple[Key, ...] = SUMMARY_KEYS) -> dict[str, Any]:
    """{cell: {"n": runs, "seeds": [...], dotted key: {mean, sd, min, max, n} or None}} (summary.json)."""
    out: dict[str, Any] = {}
    for cell, members in by_cell(runs).items():
        entry: dict[str, Any] = {"n": len(members), "seeds": [seed_of(r) for r in members]}
        for key in keys:
            s = spread([key.read(r.metrics) for r in members])
            entry[key.dotted] = None if s is None else s.as_dict()
        out[cell] = entry
    return out


def format_spread(s: Spread | None) -> str:
    """'0.912 ± 0.013' (the report's number format), the mean alone for one seed, 'n/a' for none."""
    if s is None:
        return format_value(None)
    if s.sd is None:  # one seed: the value as the per-run table prints it (an int stays an int)
        return format_value(int(s.mean) if s.mean.is_integer() else s.mean)
    return f"{format_value(s.mean)} ± {format_value(s.sd)}"


def spread_rows(runs: list[Run], columns: list[tuple[str, Callable[[dict[str, Any]], Any]]]) -> list[list[str]]:
    """One row per cell: its label with the seed count, then 'mean ± sd' of each column."""
    rows = []
    for cell, members in by_cell(runs).items():
        cells = [format_spread(spread([fn(r.metrics) for r in members])) for _, fn in columns]
        rows.append([f"{cell} (n={len(members)})", *cells])
    return rows


def has_repeats(runs: list[Run]) -> bool:
    """True when some cell has more than one run (several seeds)."""
    return any(len(m) > 1 for m in by_cell(runs).values())


def first_of_each_cell(runs: list[Run]) -> list[Run]:
    """One run per cell (its first seed): what the per-run figures show when there are repeats."""
    return [members[0] for members in by_cell(runs).values()]
