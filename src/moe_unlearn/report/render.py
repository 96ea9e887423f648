"""report.md and report.html: one results table, the figures, and how to read them.

The PNGs are written next to report.md (which links them) and embedded in report.html as
base64, so the HTML file is self-contained.
"""

from __future__ import annotations

import base64
import html
import shutil
from pathlib import Path
from typing import Any, Callable

import matplotlib

from moe_unlearn.eval.schema import STABILITY, metric_key
from moe_unlearn.leftovers import clear_leftovers
from moe_unlearn.paths import check_destination, publish, temp_sibling
from moe_unlearn.report import aggregate, plots
from moe_unlearn.report.format import format_value
from moe_unlearn.report.runs import Run, load_runs
from moe_unlearn.report.tables import PRIVLEAK, SECONDS, STEPS, column, plain, select_table
from moe_unlearn.report.tradeoff import tradeoff_curves


def _interval(ci: Any) -> str | None:
    """'[low, high]' of a 95% interval, None without one."""
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list) and len(ci) == 2 and None not in ci else None


def _gap(gap: Any) -> str | None:
    """The gap's 95% interval, marked ≈ when it contains 0 (the difference lies inside the noise)."""
    if not isinstance(gap, dict):
        return None
    text = _interval(gap.get("gap_ci"))
    return None if text is None else text + (" ≈" if gap.get("inside_noise") else "")


# (header, getter) for the results table; None prints as n/a
COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    STEPS,
    column("forget NLL", metric_key("nll", "forget")),
    column("forget MC", metric_key("mc_acc", "forget")),
    column("forget tok-acc", metric_key("token_acc", "forget")),
    column("retain NLL", metric_key("nll", "retain")),
    column("retain MC", metric_key("mc_acc", "retain")),
    column("utility MC", metric_key("utility_mc")),
    plain("stab F", STABILITY["forget"]),
    column("stab R", STABILITY["retain"]),
    plain("stab H", STABILITY["holdout"]),
    column("replay Δacc", metric_key("replay")),
    PRIVLEAK,
    column("forget quality", metric_key("forget_quality")),
    column("Δ oracle MC", metric_key("oracle_distance")),
    column("Δ oracle NLL", metric_key("oracle_distance", detail="nll")),
    SECONDS,
    plain("forget MC 95%", metric_key("mc_acc", "forget", "ci"), _interval),
    plain("forget tok-acc 95%", metric_key("token_acc", "forget", "ci"), _interval),
    plain("retain MC 95%", metric_key("mc_acc", "retain", "ci"), _interval),
    column("forgotten", metric_key("forgotten")),
    plain("vs", metric_key("forgotten", detail="reference")),
    plain("gap MC", metric_key("forgotten", detail="mc_acc.gap")),
    plain("gap MC 95%", metric_key("forgotten", detail="mc_acc"), _gap),
    plain("gap NLL", metric_key("forgotten", detail="nll.gap")),
]

HOW_TO_READ = [
    "forget metrics should fall (MC accuracy toward chance 0.25, NLL up); retain and utility should stay.",
    "stab F/R/H: routing stability, the share of the original model's top-k experts still chosen on "
    "forget/retain/holdout tokens (1 = unchanged). Low retain stability = the router was rewired.",
    "replay Δacc: forget answer accuracy gained when the ORIGINAL routing is replayed into the unlearned "
    "model. Large = the forgetting was done by re-routing; the knowledge is still in the experts.",
    "The first rows are references: the original model (before unlearning) and, when built, the retrain "
    "oracle (the same recipe trained without the forget set: what perfect unlearning would give). Read every "
    "run between the two; the oracle row is the target.",
    "PrivLeak (MUSE's definition): Min-40% membership AUC forget vs holdout (forget labelled 0) relative to "
    "the retrained model's AUC, x100. 0 is ideal, about -100 = membership fully visible (the original model), "
    "positive = over-unlearned. The reference AUC is the oracle's when there is one, else 0.5.",
    "forget quality (TOFU): KS-test p-value between the forget-set truth ratios of the run and of the "
    "oracle (1 = indistinguishable). Δ oracle MC / NLL: mean |run - oracle| of forget and holdout MC "
    "accuracy / answer NLL.",
    "forgotten: 1 when forget MC is at most the upper end of the retrain oracle's 95% interval and forget NLL "
    "at least the lower end of the oracle's (vs: the reference; 'holdout' = the holdout split as the proxy "
    "without an oracle). gap MC / NLL: run minus reference on the same items, with the 95% interval of the "
    "difference; ≈ marks a difference inside the noise (its interval contains 0). The 95% columns: Wilson "
    "intervals of the accuracies (Student t for token accuracy).",
    "Details of every metric: docs/evaluation.md.",
]


def row(name: str, metrics: dict[str, Any], columns: list[tuple[str, Callable]] = COLUMNS) -> list[str]:
    """Formatted cells of one run: the name, then each column's value."""
    return [name, *(format_value(fn(metrics)) for _, fn in columns)]


def columns_for(runs: list[Run]) -> tuple[list[tuple[str, Callable]], list[str]]:
    """(columns, how-to-read notes): the runs' benchmark table (report/tables.py), else COLUMNS."""
    table = select_table(runs)
    return (COLUMNS, HOW_TO_READ) if table is None else (table.columns, [*HOW_TO_READ[:-1], *table.notes, HOW_TO_READ[-1]])


def table_rows(runs: list[Run]) -> list[list[str]]:
    """One row of formatted cells per run: the name, then the columns of columns_for(runs)."""
    columns = columns_for(runs)[0]
    return [row(r.name, r.metrics, columns) for r in runs]


def _figures(runs: list[Run], out: Path) -> list[tuple[str, Path]]:
    """Every figure, drawn with run names as plain text: a '$' in a name is no TeX to parse."""
    with matplotlib.rc_context({"text.parse_math": False}):
        return _draw_figures(runs, out)


def _draw_figures(runs: list[Run], out: Path) -> list[tuple[str, Path]]:
    every, runs = runs, [r for r in runs if r.reference is None]  # the references only as anchor points
    trained = runs  # every unlearning run (the trade-off curves show each seed)
    if aggregate.has_repeats(runs):  # several seeds per cell: the per-run figures show each cell's first seed
        runs = aggregate.first_of_each_cell(runs)
    figs: list[tuple[str, Path | None]] = [
        ("Forgetting vs utility", plots.forget_vs_utility(every, out / "forget_vs_utility.png")),
        ("Routing stability per layer", plots.stability_per_layer(runs, out / "stability_per_layer.png")),
        ("Replay attack", plots.replay_recovery(runs, out / "replay_recovery.png")),
        ("Relearning attack", plots.relearn_curves(runs, out / "relearn.png")),
        ("Training curves", plots.training_curves(runs, out / "training_curves.png")),
    ]
    figs += tradeoff_curves(trained, out)
    for i, r in enumerate(runs):
        figs.append((f"Expert activation: {r.name}", plots.activation_heatmaps(r, out / f"activation_{i:02d}.png")))
    return [(title, p) for title, p in figs if p is not None]


def _count(runs: list[Run]) -> str:
    refs = sum(r.reference is not None for r in runs)
    return f"{len(runs) - refs} run(s)" + (f" and {refs} reference row(s)" if refs else "")


def render_markdown(runs: list[Run], figures: list[tuple[str, Path]]) -> str:
    columns, how_to_read = columns_for(runs)
    head = ["run", *(h for h, _ in columns)]
    lines = ["# moe-unlearn report", "", f"{_count(runs)}. ↑ / ↓: the direction an ideal unlearning moves a number.", ""]
    if aggregate.has_repeats(runs):  # several seeds per cell: mean ± sd first, every run below
        lines += ["Mean ± sd over the seeds of each cell (sample standard deviation):", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in aggregate.spread_rows(runs, columns)]
        lines += ["", "Every run:", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(runs)]
    lines += ["", "How to read it:", "", *(f"- {item}" for item in how_to_read), ""]
    for title, p in figures:
        lines += [f"## {title}", "", f"![{title}]({p.name})", ""]
    return "\n".join(lines)


def render_html(runs: list[Run], figures: list[tuple[str, Path]]) -> str:
    columns, how_to_read = columns_for(runs)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", *(h for h, _ in columns)])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(runs))
    if aggregate.has_repeats(runs):
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                        for row in aggregate.spread_rows(runs, columns))
        body = f"{cells}<tr><th colspan='{len(columns) + 1}'>every run</th></tr>{body}"
    how = "".join(f"<li>{html.escape(item)}</li>" for item in how_to_read)
    imgs = "".join(
        f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'>"
        for t, p in figures
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#f6f6f6}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>moe-unlearn report</title><style>{style}</style>"
        f"</head><body><h1>moe-unlearn report</h1><p>{_count(runs)}. ↑ / ↓: the direction an ideal unlearning "
        f"moves a number.</p><table><tr>{head}</tr>{body}</table><h2>How to read it</h2><ul>{how}</ul>{imgs}</body></html>"
    )


def write_report(paths: list[Path], out_dir: Path) -> dict[str, Path]:
    """Read the runs, draw the figures and write out_dir/report.md and out_dir/report.html."""
    runs = load_runs(paths)
    out_dir = check_destination(out_dir, [("run", p) for p in paths], kind="dir")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(out_dir)  # staging folders of a report killed before it cleaned up
    staging = temp_sibling(out_dir)  # everything is drawn here, then each file renamed into place
    staging.mkdir()
    try:
        figures = _figures(runs, staging)
        (staging / "report.md").write_text(render_markdown(runs, figures), encoding="utf-8")
        (staging / "report.html").write_text(render_html(runs, figures), encoding="utf-8")
        publish(staging, out_dir, last=("report.md", "report.html"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"markdown": out_dir / "report.md", "html": out_dir / "report.html",
            **{p.stem: out_dir / p.name for _, p in figures}}
