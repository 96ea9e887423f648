"""`moe-unlearn check CONFIG.yaml [key=value ...] [--out DIR]`: what a run needs, whether this
machine has it, and the plan (geometry, trained parameters, memory, rows, evaluation,
downloads), without loading any weights.

`require_resources` is the same preflight at the start of unlearn, finetune, eval and demo: one
stderr line per missing resource and exit 2, before anything heavy is loaded or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from moe_unlearn.cli.app import app
from moe_unlearn.config import read_config

if TYPE_CHECKING:
    from moe_unlearn.preflight import Job, Resolution

STATUS = {"local": "ok", "download": "download"}


def _report_missing(resolution: Resolution) -> bool:
    """One 'moe-unlearn: error:' line per missing resource (main process only); True when any is missing."""
    from moe_unlearn.core.dist import is_main

    if is_main():
        for r in resolution.missing:
            typer.echo(f"moe-unlearn: error: {' '.join(r.line().split())}", err=True)
    return bool(resolution.missing)


def require_resources(job: Job) -> None:
    """Exit 2 when the job lacks a resource; on an offline machine that has them all, keep every
    hub client offline (cache reads, no retries)."""
    from moe_unlearn.hub import stay_offline
    from moe_unlearn.preflight import resolve

    resolution = resolve(job)
    if _report_missing(resolution):
        raise typer.Exit(2)
    if resolution.offline is not None:
        stay_offline()


@app.command("check")
def check(
    config: Path = typer.Argument(..., help="Unlearn YAML (e.g. configs/benchmarks/wmdp_cyber.yaml)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides, e.g. model.path=DIR"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory to check (default: output_dir of the config)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Run code that the model folder ships (auto_map); off by default."),
) -> None:
    """Check that every resource of a run is on this machine and print its plan; exit 0 when all
    are local, 2 otherwise (missing, or still to download)."""
    read_config(config, overrides or [])  # a missing or broken file or override: one line before torch loads
    import datasets

    from moe_unlearn.preflight import resolve, run_job
    from moe_unlearn.preflight.plan import plan
    from moe_unlearn.train import load_config

    datasets.disable_progress_bars()  # counting the rows of a local dataset copy is not news
    cfg = load_config(config, [*(overrides or []), *(["model.trust_remote_code=true"] if trust_remote_code else [])])
    out_dir = out or (Path(cfg.output_dir) if cfg.output_dir else None)
    resolution = resolve(run_job(cfg, out_dir, out_key="--out" if out else "output_dir"))
    for heading, text in plan(cfg, resolution, config):
        typer.echo(f"{heading:<9} {text}")
    for r in resolution.resources:
        if r.status != "missing":  # the missing ones are the error lines on stderr
            typer.echo(f"{STATUS[r.status]:<9} {r.line()}")
    if _report_missing(resolution):
        raise typer.Exit(2)
    if resolution.downloads:  # reachable, so a run would start; `check` answers "is everything here?"
        typer.echo(f"moe-unlearn: error: {len(resolution.downloads)} resource(s) are not on this machine yet and "
                   "would be downloaded (the 'download' lines above)", err=True)
        raise typer.Exit(2)
