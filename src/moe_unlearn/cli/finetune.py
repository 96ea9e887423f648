"""`moe-unlearn finetune CONFIG.yaml [key=value ...] [--out DIR] [--overwrite] [--resume]`.

The step the paper recipes assume before unlearning (TOFU's fine-tuned and retain-only models,
MUSE's target model), run by the unlearning engine with method `sft`: the same configs, output
directory, checkpoints, --resume, processes and safety rules as `unlearn`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from moe_unlearn.cli.app import app
from moe_unlearn.cli.unlearn import OUT, OVERRIDES, OVERWRITE, PUSH, QUIET, RESUME, TRUST, run_job


@app.command("finetune")
def finetune(
    config: Path = typer.Argument(..., help="YAML config with method: sft (see configs/benchmarks/*_finetune.yaml)."),
    overrides: Optional[list[str]] = OVERRIDES,
    out: Optional[Path] = OUT,
    overwrite: bool = OVERWRITE,
    resume: bool = RESUME,
    quiet: bool = QUIET,
    trust_remote_code: bool = TRUST,
    push_to_hub: Optional[str] = PUSH,
) -> None:
    """Fine-tune a model on data.forget (method sft): save model/, evaluate, write metrics.json."""
    run_job(config, overrides or [], out, overwrite=overwrite, resume=resume, quiet=quiet,
            trust_remote_code=trust_remote_code, push_to_hub=push_to_hub, retrained=None, learn=True)
