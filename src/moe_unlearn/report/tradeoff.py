"""Trade-off curves: forget MC accuracy against retain MC accuracy along each run.

The points are the periodic evaluations a run logs (`train.eval_every`) in log.jsonl, step 0
(the original model) first. One figure per base method, one line per adapter set; runs of
the same cell from several seeds share a colour (the first one labelled). A run starts at the
top right (the original model knows both); the ideal one goes left (forgotten) and stays high
(utility kept). The shaded band is the forget MC's target: the retrain oracle's 95% interval
(eval/forgotten.py), or the holdout split's when no oracle row is in the report.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from moe_unlearn.eval.schema import metric_key  # noqa: E402
from moe_unlearn.report.runs import Run  # noqa: E402

DPI = 110


def eval_path(run: Run) -> list[tuple[int, float, float]]:
    """(step, forget MC, retain MC) of every periodic eval in the run's log that has both."""
    out = []
    for row in run.log:
        ev = row.get("eval") if isinstance(row, dict) else None
        if not isinstance(ev, dict):
            continue
        f, r = (metric_key("mc_acc", s).read(ev) for s in ("forget", "retain"))  # metrics.json's layout
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (f, r)) and "step" in row:
            out.append((int(row["step"]), float(f), float(r)))
    return sorted(out)


def _adapters(run: Run) -> str:
    return "+".join(run.metrics.get("adapters") or []) or "none"


def tradeoff_curves(runs: list[Run], out_dir: Path) -> list[tuple[str, Path]]:
    """One PNG per base method with logged evals: [(title, path)], empty when no run has any."""
    methods: dict[str, list[tuple[Run, list[tuple[int, float, float]]]]] = {}
    for r in runs:
        path = eval_path(r)
        if len(path) >= 2:
            methods.setdefault(str(r.metrics.get("method") or r.name), []).append((r, path))
    figures = []
    band = target_band(runs)
    for i, (method, items) in enumerate(methods.items()):
        title = f"Trade-off along the run: {method}"
        figures.append((title, _draw(method, items, Path(out_dir) / f"tradeoff_{i:02d}.png", band)))
    return figures


def target_band(runs: list[Run]) -> tuple[float, float, str] | None:
    """(low, high, label) of the forget-MC target: the oracle row's 95% interval, else a run's holdout proxy."""
    for r in runs:
        ci = metric_key("mc_acc", "forget", "ci").read(r.metrics)
        if r.reference == "oracle" and isinstance(ci, list) and len(ci) == 2:
            return float(ci[0]), float(ci[1]), "retrain oracle (95%)"
    for r in runs:
        ci = metric_key("mc_acc", "holdout", "ci").read(r.metrics)
        proxy = metric_key("forgotten", detail="reference").read(r.metrics) == "holdout"
        if proxy and isinstance(ci, list) and len(ci) == 2:
            return float(ci[0]), float(ci[1]), "holdout split (95%, no oracle)"
    return None


def _draw(method: str, items: list[tuple[Run, list[tuple[int, float, float]]]], path: Path,
          band: tuple[float, float, str] | None = None) -> Path:
    combos = list(dict.fromkeys(_adapters(r) for r, _ in items))
    colors = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(6.8, 5.2))
    labelled: set[str] = set()
    for run, points in items:
        combo = _adapters(run)
        color = colors[combos.index(combo) % 10]
        xs, ys = [p[1] for p in points], [p[2] for p in points]
        label = None if combo in labelled else combo
        labelled.add(combo)
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, alpha=0.85, color=color, label=label)
        ax.plot(xs[-1:], ys[-1:], marker="X", markersize=8, color=color, linestyle="none")  # where it stopped
    if band:
        ax.axvspan(band[0], band[1], color="tab:green", alpha=0.15, linewidth=0)
        ax.text(band[1] + 0.01, 0.06, f"target: {band[2]}", color="tab:green", fontsize=8,
                transform=ax.get_xaxis_transform())
    ax.axvline(0.25, color="grey", linestyle="--", linewidth=1)
    ax.text(0.26, 0.02, "chance", color="grey", fontsize=8, transform=ax.get_xaxis_transform())
    ax.set_xlim(-0.03, 1.03)  # as the forgetting-vs-utility scatter: ideal is top left
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("forget MC accuracy (lower = more forgotten)")
    ax.set_ylabel("retain MC accuracy (higher = utility kept)")
    ax.set_title(f"{method}: forgetting vs utility along the run (x = last eval)")
    ax.grid(alpha=0.3)
    ax.legend(title="adapters", fontsize=8, title_fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path

