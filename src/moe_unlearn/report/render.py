"""report.md and report.html: one results table, the figures, and how to read them.

The PNGs are written next to report.md (which links them) and embedded in report.html as
base64, so the HTML file is self-contained.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Callable

from moe_unlearn.errors import UserError
from moe_unlearn.report import aggregate, plots
from moe_unlearn.report.format import format_value
from moe_unlearn.report.plots import get
from moe_unlearn.report.runs import Run, load_runs
from moe_unlearn.report.tradeoff import tradeoff_curves

# (header, getter) for the results table; None prints as n/a
COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("steps", lambda m: m.get("steps")),
    ("forget NLL ↑", lambda m: get(m, "forget", "nll")),
    ("forget MC ↓", lambda m: get(m, "forget", "mc_acc")),
    ("forget tok-acc ↓", lambda m: get(m, "forget", "token_acc")),
    ("retain NLL ↓", lambda m: get(m, "retain", "nll")),
    ("retain MC ↑", lambda m: get(m, "retain", "mc_acc")),
    ("utility MC ↑", lambda m: get(m, "utility_mc", "value")),
    ("stab F", lambda m: get(m, "routing", "stability", "forget")),
    ("stab R ↑", lambda m: get(m, "routing", "stability", "retain")),
    ("stab H", lambda m: get(m, "routing", "stability", "holdout")),
    ("replay Δacc ↓", lambda m: get(m, "replay", "value")),
    ("PrivLeak (→0)", lambda m: get(m, "privacy", "value")),
    ("seconds", lambda m: get(m, "timing", "total_seconds")),
]

HOW_TO_READ = [
    "forget metrics should fall (MC accuracy toward chance 0.25, NLL up); retain and utility should stay.",
    "stab F/R/H: routing stability, the share of the original model's top-k experts still chosen on "
    "forget/retain/holdout tokens (1 = unchanged). Low retain stability = the router was rewired.",
    "replay Δacc: forget answer accuracy gained when the ORIGINAL routing is replayed into the unlearned "
    "model. Large = the forgetting was done by re-routing; the knowledge is still in the experts.",
    "PrivLeak: Min-k% membership AUC forget vs holdout relative to a retrained model's AUC (0 is ideal, "
    "negative = over-unlearned, positive = membership still leaks).",
    "Details of every metric: docs/evaluation.md.",
]


def row(name: str, metrics: dict[str, Any], columns: list[tuple[str, Callable]] = COLUMNS) -> list[str]:
    """Formatted cells of one run: the name, then each column's value."""
    return [name, *(format_value(fn(metrics)) for _, fn in columns)]


def table_rows(runs: list[Run]) -> list[list[str]]:
    """One row of formatted cells per run: the name, then COLUMNS."""
    return [row(r.name, r.metrics) for r in runs]


def _figures(all_runs: list[Run], out: Path) -> list[tuple[str, Path]]:
    # with several seeds per cell the per-run figures show each cell's first seed; the
    # trade-off curves show every run
    runs = aggregate.first_of_each_cell(all_runs) if aggregate.has_repeats(all_runs) else all_runs
    figs: list[tuple[str, Path | None]] = [
        ("Forgetting vs utility", plots.forget_vs_utility(runs, out / "forget_vs_utility.png")),
        ("Routing stability per layer", plots.stability_per_layer(runs, out / "stability_per_layer.png")),
        ("Replay attack", plots.replay_recovery(runs, out / "replay_recovery.png")),
        ("Relearning attack", plots.relearn_curves(runs, out / "relearn.png")),
        ("Training curves", plots.training_curves(runs, out / "training_curves.png")),
    ]
    figs += tradeoff_curves(all_runs, out)
    for i, r in enumerate(runs):
        figs.append((f"Expert activation: {r.name}", plots.activation_heatmaps(r, out / f"activation_{i:02d}.png")))
    return [(title, p) for title, p in figs if p is not None]


def render_markdown(runs: list[Run], figures: list[tuple[str, Path]]) -> str:
    head = ["run", *(h for h, _ in COLUMNS)]
    lines = ["# moe-unlearn report", "", f"{len(runs)} run(s). ↑ / ↓: the direction an ideal unlearning moves a number.", ""]
    if aggregate.has_repeats(runs):  # several seeds per cell: mean ± sd first, every run below
        lines += ["Mean ± sd over the seeds of each cell (sample standard deviation):", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in aggregate.spread_rows(runs, COLUMNS)]
        lines += ["", "Every run:", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(runs)]
    lines += ["", "How to read it:", "", *(f"- {item}" for item in HOW_TO_READ), ""]
    for title, p in figures:
        lines += [f"## {title}", "", f"![{title}]({p.name})", ""]
    return "\n".join(lines)


def render_html(runs: list[Run], figures: list[tuple[str, Path]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", *(h for h, _ in COLUMNS)])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(runs))
    if aggregate.has_repeats(runs):
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                        for row in aggregate.spread_rows(runs, COLUMNS))
        body = (f"{cells}<tr><th colspan='{len(COLUMNS) + 1}'>every run</th></tr>{body}")
    how = "".join(f"<li>{html.escape(item)}</li>" for item in HOW_TO_READ)
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
        f"</head><body><h1>moe-unlearn report</h1><p>{len(runs)} run(s). ↑ / ↓: the direction an ideal unlearning "
        f"moves a number.</p><table><tr>{head}</tr>{body}</table><h2>How to read it</h2><ul>{how}</ul>{imgs}</body></html>"
    )


def write_report(paths: list[Path], out_dir: Path) -> dict[str, Path]:
    """Read the runs, draw the figures and write out_dir/report.md and out_dir/report.html."""
    runs = load_runs(paths)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; pass a directory for the report")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(runs, out_dir)
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_markdown(runs, figures))
    page.write_text(render_html(runs, figures))
    return {"markdown": md, "html": page, **{p.stem: p for _, p in figures}}
