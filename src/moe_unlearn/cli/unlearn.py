"""`moe-unlearn unlearn CONFIG.yaml [key=value ...] [--out DIR] [--overwrite] [--resume]`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from moe_unlearn.cli.app import app
from moe_unlearn.config import read_config
from moe_unlearn.errors import RunFailure, UserError

# the options `unlearn` and `finetune` share (one engine, one set of output and resume rules)
OVERRIDES = typer.Argument(None, help="dotted.key=value overrides, e.g. train.lr=3e-4")
OUT = typer.Option(None, "--out", help="Output directory (default: output_dir of the config).")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace the results in a used output directory.")
RESUME = typer.Option(False, "--resume", help="Continue a stopped run from its last checkpoint.")
QUIET = typer.Option(False, "--quiet", help="No progress bars.")
TRUST = typer.Option(False, "--trust-remote-code", help="Run code that the model folder ships (auto_map); off by default.")
PUSH = typer.Option(None, "--push-to-hub", metavar="REPO",
                    help="Upload model/ (with its model card) to this hub repo (org/name) at the end.")


def run_job(config: Path, overrides: list[str], out: Optional[Path], *, overwrite: bool, resume: bool, quiet: bool,
            trust_remote_code: bool, push_to_hub: Optional[str], retrained: Optional[str], learn: bool) -> None:
    """The body of `unlearn` (learn=False) and `finetune` (learn=True): one engine, one set of
    output, resume and safety rules; only which objectives each accepts differs."""
    read_config(config, overrides)  # a missing or broken file or override: one line before torch loads
    from moe_unlearn.cli.check import require_resources
    from moe_unlearn.core.dist import is_main
    from moe_unlearn.eval.schema import metric_key, run_key
    from moe_unlearn.methods import METHODS
    from moe_unlearn.preflight import run_job as preflight_job
    from moe_unlearn.report.format import format_value
    from moe_unlearn.report.model_card import check_repo_id
    from moe_unlearn.train import load_config, run_unlearning

    if push_to_hub is not None:
        check_repo_id(push_to_hub)
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    cfg = load_config(config, [*overrides, *(["model.trust_remote_code=true"] if trust_remote_code else [])])
    learns = METHODS.get(cfg.method).learns
    if learns != learn:
        raise UserError(f"method '{cfg.method}' fine-tunes: run it with `moe-unlearn finetune`" if learns else
                        f"`moe-unlearn finetune` runs method 'sft' (the config says '{cfg.method}'): "
                        "set method: sft, or run an unlearning method with `moe-unlearn unlearn`")
    if learn and cfg.adapters:
        raise UserError(f"`moe-unlearn finetune` trains without adapters (the config names {cfg.adapters}); "
                        "set adapters: []")
    out_dir = out or (Path(cfg.output_dir) if cfg.output_dir else None)
    if out_dir is None:
        raise UserError("no output directory: pass --out DIR or set output_dir in the config")
    require_resources(preflight_job(cfg, out_dir, out_key="--out" if out else "output_dir"))  # before any weights load
    ref = None
    if retrained == "oracle":
        from moe_unlearn.benchmark import resolve_manifest
        from moe_unlearn.cli.eval import oracle_reference
        from moe_unlearn.data import load_data

        ref = oracle_reference(load_data(resolve_manifest(cfg.data)), cfg.eval, progress=not quiet)
    elif retrained is not None:
        from moe_unlearn.eval.reference import read_retrained

        ref = read_retrained(retrained)
    try:
        metrics = run_unlearning(cfg, out_dir=out_dir, overwrite=overwrite, resume=resume, progress=not quiet,
                                 retrained=ref)
    except KeyboardInterrupt:  # outside the training loop (which checkpoints itself)
        raise RunFailure("interrupted; rerun the same command with --resume to continue from the last checkpoint") from None
    if not is_main():  # under a launcher every process ran the job; one prints
        return
    f_nll, f_mc, r_nll, r_mc = (format_value(metric_key(name, split).read(metrics))
                                for split in ("forget", "retain") for name in ("nll", "mc_acc"))
    how = " (resumed)" if run_key("resumed").read(metrics) else " (no checkpoint to resume: started at step 0)" if resume else ""
    typer.echo(f"{cfg.method}{'+' + '+'.join(cfg.adapters) if cfg.adapters else ''}: {run_key('steps').read(metrics)} "
               f"steps{how}; forget nll {f_nll} mc {f_mc}; retain nll {r_nll} mc {r_mc}; results in {out_dir}")
    if push_to_hub is not None:
        from moe_unlearn.report.model_card import push_to_hub as push

        typer.echo(f"pushed {out_dir / 'model'} to {push(out_dir / 'model', push_to_hub)}")


@app.command("unlearn")
def unlearn(
    config: Path = typer.Argument(..., help="YAML config (see configs/)."),
    overrides: Optional[list[str]] = OVERRIDES,
    out: Optional[Path] = OUT,
    overwrite: bool = OVERWRITE,
    resume: bool = RESUME,
    quiet: bool = QUIET,
    trust_remote_code: bool = TRUST,
    push_to_hub: Optional[str] = PUSH,
    retrained: Optional[str] = typer.Option(None, "--retrained", help="metrics.json of a retain-only model evaluated "
                                            "the same way, or 'oracle' (the embedded benchmark's): PrivLeak's "
                                            "retrained AUC, forget quality, distance to it."),
) -> None:
    """Run one unlearning job: train, save model/ (with a model card), evaluate, write metrics.json."""
    run_job(config, overrides or [], out, overwrite=overwrite, resume=resume, quiet=quiet,
            trust_remote_code=trust_remote_code, push_to_hub=push_to_hub, retrained=retrained, learn=False)
