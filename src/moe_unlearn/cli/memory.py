"""`moe-unlearn memory CONFIG.yaml [key=value ...] [--model NAME]`: GPU memory of a run, without the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from moe_unlearn.cli.app import app
from moe_unlearn.config import read_config


@app.command("memory")
def memory(
    config: Path = typer.Argument(..., help="Unlearn YAML (e.g. configs/benchmarks/wmdp_cyber.yaml)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides, e.g. model.dtype=float32"),
    model: Optional[str] = typer.Option(None, "--model", help="Model to size instead of model.path (hub id or local dir)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Run code that the model folder ships (auto_map); off by default."),
) -> None:
    """Estimate the GPU memory of an unlearning run from the model's config (meta device, no download)."""
    read_config(config, overrides or [])  # a missing or broken file or override: one line before torch loads
    from moe_unlearn.train.memory import estimate_memory
    from moe_unlearn.train import load_config

    trust = ["model.trust_remote_code=true"] if trust_remote_code else []
    est = estimate_memory(load_config(config, [*(overrides or []), *trust]), model=model)
    typer.echo(f"{est.model} ({est.dtype}): {est.params / 1e9:.2f}B parameters, {est.trainable / 1e9:.3f}B trained")
    for name, gib in est.rows():
        typer.echo(f"  {name:<52} {gib:>10}")
