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
from moe_unlearn.cli.unlearn import OUT_HELP, TRUST_HELP, run_job


@app.command("finetune")
def finetune(
    config: Path = typer.Argument(..., help="YAML config with method: sft (see configs/benchmarks/*_finetune.yaml)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides, e.g. train.lr=3e-4"),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results in a used output directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue a stopped run from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", metavar="REPO",
                                              help="Upload model/ (with its model card) to this hub repo at the end."),
) -> None:
    """Fine-tune a model on data.forget (method sft): save model/, evaluate, write metrics.json."""
    run_job(config, overrides or [], out, overwrite=overwrite, resume=resume, quiet=quiet,
            trust_remote_code=trust_remote_code, push_to_hub=push_to_hub, retrained=None, learn=True)
