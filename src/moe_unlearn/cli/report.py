"""`moe-unlearn report RUN_DIR... --out DIR`: results table and figures over finished runs.

Each RUN_DIR holds metrics.json (+ config.yaml, log.jsonl); a metrics.json file or the demo's
results.json (a list of runs) works too.
"""

from __future__ import annotations

from pathlib import Path

import typer

from moe_unlearn.cli.app import app


@app.command("report")
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories, metrics.json files or a demo results.json."),
    out: Path = typer.Option(..., "--out", help="Directory for report.md, report.html and the PNGs."),
) -> None:
    """Write report.md and report.html (self-contained) comparing runs."""
    from moe_unlearn.report import write_report

    written = write_report(list(runs), out)
    typer.echo(f"wrote {written['markdown']} and {written['html']} ({len(written) - 2} figures)")
