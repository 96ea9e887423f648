"""The model card (README.md, Hugging Face format) of every saved unlearned model, and pushing it.

The card states what a shared model is: its base model, what was unlearned (data sources and
sizes), the method and adapters with their settings, the headline evidence (forget / retain /
utility / routing stability / replay, plus the columns of its benchmark's paper) and the
moe-unlearn version. YAML metadata (base_model, tags, datasets, library_name) lets the Hub index it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from moe_unlearn import __version__
from moe_unlearn.errors import RunFailure, UserError
from moe_unlearn.paths import atomic_write
from moe_unlearn.report.plots import get
from moe_unlearn.report.tables import TABLES

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ROLES = ("forget", "retain", "holdout", "utility_mc")


def hub_id(path: str | None) -> str | None:
    """The hub repository of a model or data path (`org/name[:config]`), or None for a local path."""
    if not path:
        return None
    repo = str(path).partition(":")[0]
    return repo if HUB_ID.match(repo) and not Path(repo).exists() else None


def _sources(cfg: Any) -> list[tuple[str, Any]]:
    """(role, SourceConfig) of every configured data source, training first."""
    data = cfg.data
    out = [(role, getattr(data, role)) for role in ROLES if getattr(data, role, None) is not None]
    evals = data.eval.by_split() if getattr(data, "eval", None) else {}
    out += [(f"eval {split}", src) for split, srcs in evals.items() for src in srcs]
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "n/a" if x is None else str(x)


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The five headline numbers of a run (None where the run has no such data)."""
    def first(*paths: tuple[str, ...]) -> Any:
        return next((v for p in paths if (v := get(metrics, *p)) is not None), None)

    return {
        "forget (MC accuracy, else answer-token accuracy) ↓": first(("forget", "mc_acc"), ("forget", "token_acc")),
        "retain (MC accuracy, else answer-token accuracy) ↑": first(("retain", "mc_acc"), ("retain", "token_acc")),
        "utility (utility MC, else MMLU) ↑": first(("utility_mc", "value"), ("lm_eval", "tasks", "mmlu", "acc,none")),
        "routing stability on retain ↑": get(metrics, "routing", "stability", "retain"),
        "replay attack: forget accuracy regained ↓": get(metrics, "replay", "value"),
    }


def render_card(cfg: Any, metrics: dict[str, Any], sizes: dict[str, dict[str, int]], base_model: str) -> str:
    """README.md text: YAML metadata, then what was done and the evidence."""
    method = cfg.method
    adapters = list(cfg.adapters)
    sources = _sources(cfg)
    datasets = sorted({d for _, s in sources if (d := hub_id(s.path))})
    meta: dict[str, Any] = {}
    if hub_id(base_model):
        meta["base_model"] = hub_id(base_model)
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["moe-unlearn", "machine-unlearning", "mixture-of-experts", f"unlearning-{method}",
                    *(f"unlearning-{a}" for a in adapters), *([cfg.benchmark] if cfg.benchmark else [])]
    if datasets:
        meta["datasets"] = datasets
    name = "+".join([method, *adapters])
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {name} unlearning of {base_model}", "",
             f"`{base_model}` after machine unlearning with [moe-unlearn](https://pypi.org/project/moe-unlearn/) "
             f"{__version__}: base method `{method}`" + (f" with the MoE adapter(s) {', '.join(f'`{a}`' for a in adapters)}"
                                                          if adapters else " (no MoE adapter)")
             + (f", following the `{cfg.benchmark}` benchmark recipe." if cfg.benchmark else "."), ""]
    lines += ["## What was unlearned", ""]
    if sources:
        lines += ["| role | source | split | kind |", "|---|---|---|---|"]
        lines += [f"| {role} | `{s.path}` | {s.split} | {s.kind} |" for role, s in sources]
    else:
        lines += [f"The embedded fictitious-knowledge benchmark (`data.manifest: {cfg.data.manifest}`)."]
    lines += ["", "Records used (after `data.select`" + (f" = {cfg.data.select}" if cfg.data.select else "") + "):", ""]
    lines += ["| set | " + " | ".join(("text", "qa", "mc", "completion")) + " |", "|---|---|---|---|---|"]
    lines += [f"| {k} | " + " | ".join(str(v.get(kind, "")) for kind in ("text", "qa", "mc", "completion")) + " |"
              for k, v in sizes.items()]
    settings = {method: _plain(cfg.section(method)), **{a: _plain(cfg.section(a)) for a in adapters}}
    train = cfg.train
    lines += ["", "## Method and settings", "",
              f"- steps trained: {metrics.get('steps')}; lr {train.lr}, schedule {train.schedule}, precision "
              f"{train.precision}, trained parameters {train.params}, batch {cfg.data.batch_size} "
              f"(+{cfg.data.retain_batch_size} retain) x grad_accum {train.grad_accum}, seed {cfg.seed}",
              "", "```yaml", yaml.safe_dump(settings, sort_keys=False).strip(), "```", ""]
    lines += ["## Evidence", "", "| headline | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in headline(metrics).items()]
    if cfg.benchmark and cfg.benchmark in TABLES:
        cols = [c for c in TABLES.get(cfg.benchmark).columns if c[0] not in ("steps", "seconds")]
        lines += ["", f"As the `{cfg.benchmark}` paper reports it:", "",
                  "| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols),
                  "| " + " | ".join(_fmt(fn(metrics)) for _, fn in cols) + " |"]
    lines += ["", "Every metric, per layer and per example, is in the run's `metrics.json`; the full resolved "
              "configuration is its `config.yaml` (`moe-unlearn unlearn config.yaml --out DIR` reruns it).", "",
              "## Limitations", "",
              "Unlearning is measured, not proven: these numbers cover the listed evaluation sets only. Routing "
              "stability and the replay attack say whether forgetting was done by re-routing (knowledge still in the "
              "experts) rather than by erasure; a relearning attack (`eval.metrics: [relearn]`) tests how fast it returns.", ""]
    return "\n".join(lines)


def _plain(obj: Any) -> Any:
    from moe_unlearn.config import to_dict

    return to_dict(obj)


def write_model_card(model_dir: str | Path, cfg: Any, metrics: dict[str, Any], data: Any) -> Path:
    """Write model_dir/README.md for a finished run (data: its UnlearnData, for the record counts)."""
    base = cfg.model.path or (str(data.model) if getattr(data, "model", None) else "unknown")
    return atomic_write(Path(model_dir) / "README.md", render_card(cfg, metrics, data.sizes(), base))


def check_repo_id(repo_id: str) -> str:
    """`org/name`, else a one-line UserError (checked before training starts)."""
    if not HUB_ID.match(repo_id):
        raise UserError(f"--push-to-hub '{repo_id}' is not a hub repository id; use the form org/name")
    return repo_id


def push_to_hub(model_dir: str | Path, repo_id: str) -> str:
    """Upload model_dir (weights, tokenizer, README.md) to the Hub; RunFailure in one line when it cannot."""
    model_dir = Path(model_dir)
    later = f"the results stay in {model_dir.parent}; push later with `huggingface-cli upload {repo_id} {model_dir}`"
    if any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        raise RunFailure(f"cannot push to the Hub: HF_HUB_OFFLINE is set; {later}")
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, commit_message="moe-unlearn: unlearned model")
    except Exception as e:  # network, auth and hub errors have many types; all mean "not pushed"
        first = " ".join(str(e).split())[:160] or type(e).__name__
        raise RunFailure(f"cannot push to the Hub ({first}); {later}") from None
    return str(getattr(info, "commit_url", repo_id))
