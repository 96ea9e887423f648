"""`moe-unlearn demo`: the main job on the embedded benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from moe_unlearn.cli.app import app

console = Console(width=140, soft_wrap=True)  # a summary row is one line, also in a log file

# the report's own columns (moe_unlearn.report.render.COLUMNS), a subset that fits a terminal
SUMMARY = ("forget MC ↓", "forget NLL ↑", "retain MC ↑", "retain NLL ↓", "stab F", "stab R ↑",
           "replay Δacc ↓", "steps", "seconds", "forgotten ↑", "gap MC 95%")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Output directory (runs/, report/, results.json)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller matrix (GA, GradDiff x none, GRIP, SEUF, keep_routing)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1,
                             help="Seed of the benchmark and of the (first) unlearning runs."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Run the matrix for N unlearning seeds (seed .. seed+N-1); "
                              "the report and summary.json give mean ± sd per cell."),
    forget_domain: Optional[str] = typer.Option(None, "--forget-domain", help="Domain to forget (default: the hazardous one)."),
    oracle: bool = typer.Option(True, "--oracle/--no-oracle", help="Train (or reuse) the retrain oracle and judge "
                                "every run against it (without it: against the holdout split)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="Runs at once in worker processes sharing the "
                                       "CPU's threads (default: 2 on a CPU with 2+ cores, else 1)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides of the demo spec, e.g. common.train.max_steps=10."),
) -> None:
    """Build or reuse the embedded benchmark, run base methods x adapters, write the report."""
    import transformers

    from moe_unlearn.cli.check import require_resources
    from moe_unlearn.preflight import demo_job
    from moe_unlearn.recipes.demo import load_spec, plan, run_demo
    from moe_unlearn.report.render import COLUMNS, row

    require_resources(demo_job(overrides or [], quick=quick, out=out))  # before the benchmark or any run
    transformers.utils.logging.disable_progress_bar()  # one summary row per run is the progress

    columns = [c for c in COLUMNS if c[0] in SUMMARY]
    headers = ["run", *(name for name, _ in columns)]
    label = max([18, *(len(r.label) for r in plan(load_spec(overrides or []), quick=quick))])  # columns stay aligned
    widths = [max(len(c), label if i == 0 else 9) for i, c in enumerate(headers)]
    console.print("  ".join(c.ljust(w) for c, w in zip(headers, widths)), style="bold")

    def show(run: Any, metrics: dict[str, Any] | None, skipped: str | None) -> None:
        if metrics is None:
            reason = (skipped or "").split(";")[0]  # the full message is in demo.json
            console.print(f"{run.label.ljust(widths[0])}  skipped: {reason}", style="dim")
        else:
            console.print("  ".join(c.ljust(w) for c, w in zip(row(run.label, metrics, columns), widths)))

    def show_reference(name: str, metrics: dict[str, Any]) -> None:
        label = {"original": "original model", "oracle": "retrain oracle"}.get(name, name)
        console.print("  ".join(c.ljust(w) for c, w in zip(row(label, metrics, columns), widths)), style="italic")

    results = run_demo(out, quick=quick, seed=seed, seeds=seeds, forget_domain=forget_domain, overrides=overrides or [],
                       progress=False, oracle=oracle, jobs=jobs, on_result=show, on_reference=show_reference)
    if seeds > 1:
        from moe_unlearn.report import load_runs
        from moe_unlearn.report.aggregate import spread_rows

        console.print(f"mean ± sd over seeds {seed}..{seed + seeds - 1}", style="bold")
        for cells in spread_rows(load_runs([out / "results.json"]), columns):
            console.print("  ".join([cells[0].ljust(widths[0] + 6), *(c.ljust(15) for c in cells[1:])]))
    console.print(f"{len(results)} runs; results: {out / 'results.json'}; report: {out / 'report' / 'report.html'}")
