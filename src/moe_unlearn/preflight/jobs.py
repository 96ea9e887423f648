"""The `Job` of each command, built from what the command was given, before anything is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moe_unlearn.config import apply_overrides, build, load_yaml, merge_config, read_config
from moe_unlearn.data import DataConfig
from moe_unlearn.errors import UserError
from moe_unlearn.eval.config import EvalConfig
from moe_unlearn.preflight.resources import Job, ModelRef
from moe_unlearn.train.config import UnlearnConfig, build_config


def _template_key(data: DataConfig, evaluation: EvalConfig | None) -> str | None:
    if data.chat_template:
        return "data.chat_template"
    return "eval.chat_template" if evaluation is not None and evaluation.chat_template else None


def run_job(cfg: UnlearnConfig, out: Path | None, *, out_key: str = "--out") -> Job:
    """`unlearn`, `finetune` and `check`: the config's model, data and evaluation, and the output folder."""
    return Job(models=(ModelRef(cfg.model.path, "model.path"),), data=cfg.data, eval=cfg.eval, out=out,
               out_key=out_key, chat_template_key=_template_key(cfg.data, cfg.eval))


def eval_job(config: Path, overrides: list[str], model: Path, original: Path | None, out: Path) -> Job:
    """`eval`: --model (and --original), the data and eval sections of CONFIG (an unlearn YAML or a
    benchmark manifest), and the metrics file --out."""
    if config.is_dir() and (config / "manifest.json").is_file():
        config = config / "manifest.json"
    if not config.is_file():
        raise UserError(f"config or manifest not found: {config}")
    if config.suffix == ".json":
        data = DataConfig(manifest=str(config))
        raw: dict[str, Any] = apply_overrides({"eval": {}}, overrides)
    else:
        load_yaml(config)  # a clear error for a file that is not YAML
        raw = read_config(config, overrides)
        data = build(DataConfig, raw.get("data"), "data")
    evaluation = build(EvalConfig, raw.get("eval"), "eval")
    models = [ModelRef(str(model), "--model"), *([ModelRef(str(original), "--original")] if original else [])]
    return Job(models=tuple(models), data=data, eval=evaluation, out=out, out_is_file=True,
               chat_template_key=_template_key(data, evaluation))


def demo_job(overrides: list[str], *, quick: bool, out: Path) -> Job:
    """`demo`: the common run config of the demo spec (every run shares its model, data and evaluation)."""
    from moe_unlearn.recipes.demo import check_spec, load_spec

    spec = load_spec(overrides)
    check_spec(spec, quick=quick)  # the demo's own errors first, word for word
    first = spec["quick" if quick else "matrix"]["methods"][0]
    return run_job(build_config(merge_config(spec["common"], {"method": str(first)})), out)
