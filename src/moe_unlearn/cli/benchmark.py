"""`moe-unlearn benchmark build`: the embedded offline benchmark into a directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from moe_unlearn.cli.app import benchmark_app


@benchmark_app.command("build")
def build(
    out: Path = typer.Option(..., "--out", help="Output directory (absent or empty)."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Seed of the generator and of training."),
    forget_domain: Optional[str] = typer.Option(None, help="Domain to forget (default: pathogens)."),
    forget_fraction: float = typer.Option(1.0, help="Share of the forget domain's entities to forget, in (0, 1]."),
    preset: str = typer.Option("default", help="Build preset: default (demo model) or tiny (tests)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build afresh instead of copying a cached build."),
) -> None:
    """Generate the fictitious-knowledge splits, train the tiny MoE, write DIR/manifest.json."""
    from moe_unlearn.benchmark import build_benchmark, cached_benchmark

    if no_cache:
        manifest = build_benchmark(out, preset=preset, seed=seed, forget_domain=forget_domain,
                                   forget_fraction=forget_fraction, progress=True)
    else:
        manifest = cached_benchmark(preset, seed, forget_domain, forget_fraction, out_dir=out, progress=True)
    report = json.loads(manifest.read_text())["base_model_report"]
    keys = ("forget_answer_exact", "retain_answer_exact", "forget_mc_acc", "retain_mc_acc",
            "max_expert_load_ratio", "build_seconds")
    typer.echo(f"wrote {manifest}")
    typer.echo("  " + ", ".join(f"{k}={report[k]}" for k in keys))
