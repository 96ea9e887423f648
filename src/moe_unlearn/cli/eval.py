"""`moe-unlearn eval`: evaluate a model (optionally against the original) into metrics.json.

    moe-unlearn eval --model RUN/model --original BASE_MODEL CONFIG.yaml|manifest.json --out metrics.json

CONFIG is an unlearn YAML (its `data:` and `eval:` sections are used, `base:` files included)
or a benchmark manifest.json (default eval settings). metrics.json carries the keys of the
unlearn command's metrics.json where meaningful plus every metric the eval section enables.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from moe_unlearn.cli.app import app
from moe_unlearn.config import apply_overrides, build, load_yaml, read_config
from moe_unlearn.errors import UserError
from moe_unlearn.paths import atomic_write, check_destination


def load_eval_inputs(path: Path, overrides: list[str]) -> tuple[Any, Any, dict[str, Any], list[tuple[str, Any]]]:
    """(UnlearnData, EvalConfig, {"method", "adapters"}, the files read: (what, path)) from an
    unlearn YAML or a manifest."""
    from moe_unlearn.benchmark import resolve_manifest
    from moe_unlearn.data import DataConfig, UnlearnData, load_data
    from moe_unlearn.eval import EvalConfig
    from moe_unlearn.train.rundir import run_inputs

    if path.is_dir() and (path / "manifest.json").is_file():
        path = path / "manifest.json"
    if not path.is_file():
        raise UserError(f"config or manifest not found: {path}")
    if path.suffix == ".json":
        raw: dict[str, Any] = apply_overrides({"eval": {}}, overrides)
        unknown = sorted(set(raw) - {"eval"})
        if unknown:
            raise UserError(f"with a manifest only eval.* overrides apply, got '{unknown[0]}'")
        data = UnlearnData.from_manifest(path)
        return (data, build(EvalConfig, raw["eval"], "eval"), {"method": None, "adapters": []},
                [("benchmark dir", path.parent)])
    load_yaml(path)  # a clear error for a file that is not YAML
    files: list[str] = []
    raw = read_config(path, overrides, files=files)
    data_cfg = resolve_manifest(build(DataConfig, raw.get("data"), "data"))
    data = load_data(data_cfg)
    cfg = build(EvalConfig, raw.get("eval"), "eval")
    read = run_inputs(files, data.model, data_cfg, data.manifest)
    return data, cfg, {"method": raw.get("method"), "adapters": list(raw.get("adapters") or [])}, read


@app.command("eval")
def eval_command(
    config: Path = typer.Argument(..., help="Unlearn YAML (data/eval sections) or benchmark manifest.json."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides, e.g. eval.max_examples=50"),
    model: Path = typer.Option(..., "--model", help="Model directory to evaluate (e.g. RUN/model)."),
    original: Optional[Path] = typer.Option(None, "--original", help="Original model: enables routing stability, activation and replay."),
    retrained: Optional[str] = typer.Option(None, "--retrained", help="metrics.json of a retain-only model (forget quality, PrivLeak AUC), or 'oracle': the embedded benchmark's retrain oracle."),
    out: Path = typer.Option(..., "--out", help="Where to write metrics.json (not inside --model)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub."),
    allow_missing_weights: bool = typer.Option(False, "--allow-missing-weights",
                                               help="Accept weight files that lack tensors (left at random values)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Evaluate a model: knowledge, privacy, routing stability and the replay attack."""
    from moe_unlearn.cli.check import require_resources
    from moe_unlearn.eval import evaluate_model
    from moe_unlearn.eval.reference import read_retrained
    from moe_unlearn.eval.schema import STABILITY, metric_key, run_metrics, timing
    from moe_unlearn.models import load_model
    from moe_unlearn.preflight import eval_job
    from moe_unlearn.report.format import format_value
    from moe_unlearn.train.accel import make_accelerator

    start = time.perf_counter()
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if not model.is_dir():
        raise UserError(f"--model {model} is not a directory; pass a saved model folder (e.g. RUN/model)")
    retrained_file = None if retrained in (None, "oracle") else Path(retrained)
    given = [("--model dir", model), ("--original dir", original), ("--retrained file", retrained_file), ("config", config)]
    check_destination(out, given)  # before the slow part; again below with the data files
    require_resources(eval_job(config, overrides or [], model, original, out))  # before any data or weights load
    ref = None if retrained_file is None else read_retrained(retrained_file)
    data, cfg, info, read = load_eval_inputs(config, overrides or [])
    check_destination(out, [*given, *read])
    if retrained == "oracle":  # built (if not cached) before the process group starts: a build runs no collective
        oracle_model(data, progress=not quiet)
    accelerator = make_accelerator(device)  # under a launcher: this process's device, eval sets split by rows
    if retrained == "oracle":
        ref = oracle_reference(data, cfg, progress=not quiet and accelerator.is_main_process)
    kwargs = {"dtype": dtype, "device": accelerator.device.type if accelerator.device.type == "cpu" else str(accelerator.device),
              "trust_remote_code": trust_remote_code, "allow_missing": allow_missing_weights}
    net, tokenizer = load_model(model, **kwargs)
    orig_net = load_model(original, **kwargs)[0] if original is not None else None
    main = accelerator.is_main_process
    results = evaluate_model(net, tokenizer, data, cfg, original_model=orig_net, retrained=ref,
                             progress=not quiet and main)
    if not main:
        return
    metrics = run_metrics(results, **info, steps=None, model=str(model),
                          original=None if original is None else str(original),
                          timing=timing(time.perf_counter() - start))
    atomic_write(out, json.dumps(metrics, indent=2))
    f_nll, f_mc, r_nll, r_mc, stab_f, stab_r = (format_value(key.read(metrics)) for key in (
        metric_key("nll", "forget"), metric_key("mc_acc", "forget"), metric_key("nll", "retain"),
        metric_key("mc_acc", "retain"), STABILITY["forget"], STABILITY["retain"]))
    typer.echo(f"forget nll {f_nll} mc {f_mc}; retain nll {r_nll} mc {r_mc}; "
               f"stability forget {stab_f} retain {stab_r}; wrote {out}")


def oracle_model(data: Any, *, progress: bool) -> Path:
    """The model dir of the embedded benchmark's retrain oracle (trained first if not cached)."""
    from moe_unlearn.benchmark.oracle import cached_oracle

    if getattr(data, "manifest", None) is None:
        raise UserError("--retrained oracle needs the embedded benchmark: pass its manifest.json (or a config with "
                        "data.manifest) as CONFIG, or pass a retain-only model's metrics.json")
    return cached_oracle(data.manifest, progress=progress)


def oracle_reference(data: Any, cfg: Any, *, progress: bool) -> dict[str, Any]:
    """`--retrained oracle`: the embedded benchmark's retrain oracle evaluated like the model (built if needed)."""
    from moe_unlearn.benchmark.oracle import oracle_metrics

    oracle_model(data, progress=progress)
    return oracle_metrics(data.manifest, data, cfg, progress=progress)
