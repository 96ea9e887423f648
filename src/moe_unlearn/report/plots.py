"""The report's figures (matplotlib, Agg backend). Each function writes one PNG and returns its
path, or None when no run has the data it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from moe_unlearn.eval.schema import ACTIVATION, PER_LAYER, STABILITY, metric_key  # noqa: E402
from moe_unlearn.report.format import get  # noqa: E402
from moe_unlearn.report.runs import Run  # noqa: E402

DPI = 110
_REPLAY_WITHOUT = metric_key("replay", detail="without.token_acc")
_REPLAY_WITH = metric_key("replay", detail="with_replay.token_acc")
_RELEARN_CURVE = metric_key("relearn", detail="curve")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def knowledge(m: dict[str, Any], split: str) -> tuple[float | None, str]:
    """(value, label) of a split's knowledge score: MC accuracy, else answer-token accuracy."""
    mc = _num(metric_key("mc_acc", split).read(m))
    if mc is not None:
        return mc, "MC accuracy"
    return _num(metric_key("token_acc", split).read(m)), "answer-token accuracy"


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def forget_vs_utility(runs: list[Run], path: Path) -> Path | None:
    """Scatter: forget knowledge (x, lower = forgotten) vs retain knowledge (y), coloured by
    retained routing stability, each point labelled with its run."""
    pts = []
    for r in runs:
        (x, xl), (y, yl) = knowledge(r.metrics, "forget"), knowledge(r.metrics, "retain")
        if x is not None and y is not None:
            pts.append((r.name, x, y, _num(STABILITY["retain"].read(r.metrics)), xl, yl))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    stab = [p[3] for p in pts]
    colored = all(s is not None for s in stab)
    sc = ax.scatter(
        [p[1] for p in pts], [p[2] for p in pts], s=70, c=stab if colored else "tab:blue",
        cmap="viridis", vmin=0, vmax=1, edgecolors="black", zorder=3,
    )
    if colored:
        fig.colorbar(sc, ax=ax, label="retain routing stability")
    _label_points(fig, ax, [(p[0], p[1], p[2]) for p in pts])
    if pts[0][4] == "MC accuracy":
        ax.axvline(0.25, color="grey", linestyle="--", linewidth=1, label="chance (4 choices)")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(f"forget {pts[0][4]}  (lower = more forgotten)")
    ax.set_ylabel(f"retain {pts[0][5]}  (higher = utility kept)")
    ax.set_title("Forgetting vs utility (ideal: top left)")
    ax.grid(alpha=0.3)
    if len(pts) <= 6:
        return _save(fig, path)
    fig.savefig(path, dpi=DPI)  # tight_layout would undo the room kept for the key
    plt.close(fig)
    return path


def label_groups(pts: list[tuple[str, float, float]], dx: float = 0.08, dy: float = 0.03
                 ) -> list[tuple[float, float, list[int]]]:
    """Points (1-based, in order) that share one label, and where it goes: a point joins the
    first group whose first point lies within dx across and dy up or down (about one label's
    width and height at the report's size, in data units on 0..1 axes), so labels do not print
    over each other; the label sits right of the group's rightmost point, at its mean height,
    so it covers none of its own points."""
    groups: list[list[int]] = []
    for i, (_, x, y) in enumerate(pts, 1):
        near = next((g for g in groups if abs(pts[g[0] - 1][1] - x) <= dx and abs(pts[g[0] - 1][2] - y) <= dy), None)
        if near is None:
            groups.append([i])
        else:
            near.append(i)
    return [(max(pts[i - 1][1] for i in g), sum(pts[i - 1][2] for i in g) / len(g), g) for g in groups]


def _label_points(fig: Any, ax: Any, pts: list[tuple[str, float, float]], direct_max: int = 6) -> None:
    """Names next to points when few; else numbers (neighbouring points share a label) and a key."""
    if len(pts) <= direct_max:
        for name, x, y in pts:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        return
    for x, y, ids in label_groups(pts):
        ax.annotate(",".join(map(str, ids)), (x, y), textcoords="offset points", xytext=(6, 3), fontsize=8)
    key = "\n".join(f"{i:>2}  {name}" for i, (name, _, _) in enumerate(pts, 1))
    fig.set_figwidth(fig.get_figwidth() + 2.2)
    fig.subplots_adjust(left=0.08, right=0.72)
    fig.text(0.8, 0.5, key, fontsize=7.5, family="monospace", va="center", ha="left")


def run_styles(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Line style per run: colour by base method, line style and marker by adapter set, so
    many runs stay tellable apart."""
    methods = list(dict.fromkeys(str(r.metrics.get("method") or r.name) for r in runs))
    combos = list(dict.fromkeys("+".join(r.metrics.get("adapters") or []) for r in runs))
    lines, markers = ["-", "--", ":", "-."], ["o", "s", "^", "D", "v", "P"]
    colors = plt.get_cmap("tab10").colors
    out = {}
    for r in runs:
        mi = methods.index(str(r.metrics.get("method") or r.name))
        ci = combos.index("+".join(r.metrics.get("adapters") or []))
        out[r.name] = {"color": colors[mi % 10], "linestyle": lines[ci % 4], "marker": markers[ci % 6]}
    return out


def stability_per_layer(runs: list[Run], path: Path) -> Path | None:
    """Routing stability per MoE layer on forget / retain / holdout, one line per run."""
    splits = [s for s in PER_LAYER if any(PER_LAYER[s].read(r.metrics) for r in runs)]
    if not splits:
        return None
    styles = run_styles(runs)
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 4), sharey=True, squeeze=False)
    for ax, split in zip(axes[0], splits):
        for r in runs:
            vals = PER_LAYER[split].read(r.metrics)
            if vals:
                ax.plot(range(len(vals)), vals, label=r.name, **styles[r.name])
        ax.set_title(f"{split} set")
        ax.set_xlabel("MoE layer")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][0].set_ylabel("share of original top-k kept")
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = min(len(labels), 4)
    rows = -(-len(labels) // ncol)
    fig.set_figheight(4 + 0.25 * rows)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle("Routing stability per layer (1 = routing unchanged)")
    fig.tight_layout(rect=(0, 0.25 * rows / fig.get_figheight() + 0.02, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def activation_heatmaps(run: Run, path: Path, split: str = "forget") -> Path | None:
    """Expert activation frequency [layer x expert] before, after, and the change, on one split."""
    act = ACTIVATION[split].read(run.metrics)
    if not act:
        return None
    before, after = np.array(act["before"]), np.array(act["after"])
    delta = after - before
    layers, experts = before.shape
    fig, axes = plt.subplots(1, 3, figsize=(min(4 + 0.45 * experts, 9) * 3 / 1.6, 1.6 + 0.5 * layers))
    vmax = max(before.max(), after.max())
    lim = max(abs(delta).max(), 1e-9)
    panels = [(before, "before (original)", "viridis", 0, vmax), (after, "after (unlearned)", "viridis", 0, vmax),
              (delta, "change (after - before)", "coolwarm", -lim, lim)]
    for ax, (mat, title, cmap, lo, hi) in zip(axes, panels):
        im = ax.imshow(mat, cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("expert")
        ax.set_ylabel("MoE layer")
        ax.set_xticks(range(experts))
        ax.set_yticks(range(layers))
        ax.tick_params(labelsize=7)
        if layers * experts <= 128:
            for i in range(layers):
                for j in range(experts):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if cmap == "viridis" and mat[i, j] < 0.6 * hi else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{run.name}: share of {split} tokens routed to each expert")
    return _save(fig, path)


def replay_recovery(runs: list[Run], path: Path) -> Path | None:
    """Forget answer-token accuracy without vs with the original routing replayed, per run."""
    rows = [(r.name, _REPLAY_WITHOUT.read(r.metrics), _REPLAY_WITH.read(r.metrics)) for r in runs]
    rows = [(n, a, b) for n, a, b in rows if _num(a) is not None and _num(b) is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.45 * len(rows)))
    y = np.arange(len(rows))
    ax.barh(y + 0.2, [r[1] for r in rows], height=0.4, label="unlearned routing", color="tab:blue")
    ax.barh(y - 0.2, [r[2] for r in rows], height=0.4, label="original routing replayed", color="tab:orange")
    for i, (_, a, b) in enumerate(rows):
        ax.text(max(a, b) + 0.01, i, f"{b - a:+.2f}", va="center", fontsize=8)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("forget answer-token accuracy (teacher-forced)")
    ax.set_title("Replay attack: knowledge that returns under the original routing")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def loss_panels(runs: list[Run]) -> dict[str, list[tuple[str, list[tuple[float, float]]]]]:
    """Each base method's (run, loss curve) pairs: one panel, with its own y-axis, per method, since
    the methods' losses live on different scales (RMU's reaches hundreds, NPO's stays near 1)."""
    panels: dict[str, list[tuple[str, list[tuple[float, float]]]]] = {}
    for r in runs:
        curve = [(row["step"], row["loss"]) for row in r.log
                 if _num(row.get("loss")) is not None and _num(row.get("step")) is not None]
        if curve:
            method = str(r.metrics.get("method") or r.name.split("+")[0])
            panels.setdefault(method, []).append((r.name, curve))
    return panels


def training_curves(runs: list[Run], path: Path) -> Path | None:
    """Training loss per step, one panel per base method, and, where logged, the periodic forget NLL."""
    panels = loss_panels(runs)
    if not panels:
        return None
    evals = [(r.name, [(row["step"], row["eval"]["forget"]["nll"]) for row in r.log
                       if _num(get(row, "eval", "forget", "nll")) is not None and _num(row.get("step")) is not None])
             for r in runs]
    evals = [(n, c) for n, c in evals if c]
    count = len(panels) + (1 if evals else 0)
    cols = min(count, 3)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    styles = run_styles(runs)
    for ax, (method, curves) in zip(flat, panels.items()):
        for name, c in curves:
            ax.plot(*zip(*c), label=name, color=styles[name]["color"], linestyle=styles[name]["linestyle"])
        ax.set_title(f"training loss: {method}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if evals:
        ax = flat[len(panels)]
        for name, c in evals:
            ax.plot(*zip(*c), label=name, **styles[name])
        ax.set_title("forget answer NLL (periodic eval)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in flat[count:]:
        ax.set_visible(False)
    return _save(fig, path)


def relearn_curves(runs: list[Run], path: Path) -> Path | None:
    """Relearning attack: forget answer-token accuracy per fine-tuning step."""
    curves = [(r.name, _RELEARN_CURVE.read(r.metrics)) for r in runs]
    curves = [(n, c) for n, c in curves if c]
    if not curves:
        return None
    styles = run_styles([r for r in runs if _RELEARN_CURVE.read(r.metrics)])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, c in curves:
        ax.plot([p["step"] for p in c], [p["token_acc"] for p in c], label=name, **styles[name])
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("relearning step (fine-tune on part of the forget set)")
    ax.set_ylabel("forget answer-token accuracy")
    ax.set_title("Relearning attack: how fast forgotten answers return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
