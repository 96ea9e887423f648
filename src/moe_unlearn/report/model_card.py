"""The model card (README.md, Hugging Face format) of every saved unlearned model, and pushing it.

The card states what a shared model is: its base model, what was unlearned (data sources and
sizes), the method and adapters with their settings, the headline evidence (forget / retain /
utility / routing stability / replay, plus the columns of its benchmark's paper) and the
moe-unlearn version, how to load it, its intended use, limits and the papers to cite. YAML metadata
(base_model, license, datasets, tags, model-index) lets the Hub index it. No machine path is ever
written: a local model or file is named by its folder or file name only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from moe_unlearn import __version__
from moe_unlearn.config import parse_yaml
from moe_unlearn.errors import RunFailure, UserError
from moe_unlearn.eval.schema import STABILITY, Key, metric_key
from moe_unlearn.paths import atomic_write
from moe_unlearn.report.tables import SECONDS, STEPS, TABLES, first_of, lm_eval_acc
from moe_unlearn.vocab import SPLITS

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ROLES = (*SPLITS, "utility_mc")
# what to cite for each method, adapter and benchmark (arXiv ids as open-unlearning's docs/links.md
# and this project's docs/methods.md give them)
CITATIONS: dict[str, str] = {
    "ga": "Gradient ascent: the baseline of TOFU (arXiv 2401.06121) and MUSE (arXiv 2407.06460)",
    "graddiff": "Gradient difference: the baseline of TOFU (arXiv 2401.06121) and MUSE (arXiv 2407.06460)",
    "npo": "Zhang et al. 2024, Negative Preference Optimization (arXiv 2404.05868)",
    "simnpo": "Fan et al. 2024, Simplicity Prevails: SimNPO (arXiv 2410.07163)",
    "dpo": "IdkDPO as TOFU defines it (arXiv 2401.06121)",
    "rmu": "Li et al. 2024, The WMDP Benchmark and RMU (arXiv 2403.03218)",
    "undial": "UNDIAL (arXiv 2402.10052)",
    "wga": "WGA as open-unlearning implements it (github.com/locuslab/open-unlearning)",
    "sft": "Supervised fine-tuning (the step the TOFU and MUSE recipes start from)",
    "grip": "GRIP: geometric routing invariance preservation (arXiv 2601.16905)",
    "seuf": "SEUF / UOE: selected-experts unlearning (arXiv 2411.18797, ACL 2025)",
    "trace": "TRACE: routing-aware calibration of experts (arXiv 2606.10338)",
    "keep_routing": "keep_routing: moe-unlearn's own adapter (docs/adapters.md)",
    "wmdp": "Li et al. 2024, The WMDP Benchmark (arXiv 2403.03218)",
    "muse": "Shi et al. 2024, MUSE (arXiv 2407.06460)",
    "tofu": "Maini et al. 2024, TOFU (arXiv 2401.06121)",
    "rwku": "Jin et al. 2024, RWKU (arXiv 2406.10890)",
}


def shown(path: Any) -> str:
    """A model or data path as a card may show it: a hub id as is, a local path by its last part."""
    text = str(path)
    return hub_id(text) or (Path(text.partition(":")[0]).name or text) + " (local)"


def license_of(base_model: str, configured: str | None) -> str:
    """The license a card declares: model.license, else the local base model card's, else 'other'."""
    if configured:
        return configured
    card = Path(str(base_model)) / "README.md"
    if base_model and card.is_file():
        try:
            text = card.read_text(encoding="utf-8")
            meta = parse_yaml(text.split("---")[1]) if text.startswith("---") else None
        except (OSError, UnicodeDecodeError, IndexError, ValueError, yaml.YAMLError):
            meta = None
        if isinstance(meta, dict) and isinstance(meta.get("license"), str):
            return meta["license"]
    return "other"


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


# the card's headline numbers: (what it is, the values that can show it, the first one present wins)
HEADLINE: list[tuple[str, tuple[Key, ...]]] = [
    ("forget (MC accuracy, else answer-token accuracy)",
     (metric_key("mc_acc", "forget"), metric_key("token_acc", "forget"))),
    ("retain (MC accuracy, else answer-token accuracy)",
     (metric_key("mc_acc", "retain"), metric_key("token_acc", "retain"))),
    ("utility (utility MC, else TOFU model utility, else MMLU)",
     (metric_key("utility_mc"), metric_key("tofu_model_utility"), lm_eval_acc("mmlu"))),
    ("routing stability on retain", (STABILITY["retain"],)),
    ("replay attack: forget accuracy regained", (metric_key("replay"),)),
]


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The five headline numbers of a run, labelled with their declared direction (None where the run has
    no such data)."""
    return {f"{what} {keys[0].arrow()}": first_of(*keys)(metrics) for what, keys in HEADLINE}


def model_index(name: str, metrics: dict[str, Any], benchmark: str | None) -> list[dict[str, Any]]:
    """The Hub's model-index entry: the headline numbers the run measured (None ones left out)."""
    found = [{"name": label, "type": re.sub(r"[^a-z0-9]+", "_", label.split(" (")[0].split(" ↑")[0].split(" ↓")[0]
                                             .lower()).strip("_"), "value": round(float(v), 6)}
             for label, v in headline(metrics).items() if isinstance(v, (int, float))]
    if not found:
        return []
    dataset = {"name": benchmark or "moe-unlearn embedded benchmark", "type": benchmark or "moe-unlearn"}
    return [{"name": name, "results": [{"task": {"type": "text-generation", "name": "Machine unlearning"},
                                        "dataset": dataset, "metrics": found}]}]


def render_card(cfg: Any, metrics: dict[str, Any], sizes: dict[str, dict[str, int]], base_model: str, *,
                failure: str | None = None) -> str:
    """README.md text: YAML metadata, how to load, what was done, the evidence, limits, citations.
    failure: why evaluation did not finish (the card then says so and carries no numbers)."""
    method = cfg.method
    adapters = list(cfg.adapters)
    sources = _sources(cfg)
    datasets = sorted({d for _, s in sources if (d := hub_id(s.path))})
    base_hub = hub_id(base_model) or hub_id(getattr(cfg.model, "base_model", None))
    name = "+".join([method, *adapters])
    meta: dict[str, Any] = {}
    if base_hub:
        meta["base_model"] = base_hub
    meta["license"] = license_of(base_model, getattr(cfg.model, "license", None))
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["unlearning", "moe-unlearn", "machine-unlearning", "mixture-of-experts", f"unlearning-{method}",
                    *(f"unlearning-{a}" for a in adapters), *([cfg.benchmark] if cfg.benchmark else [])]
    if datasets:
        meta["datasets"] = datasets
    index = [] if failure else model_index(f"{name} unlearning of {shown(base_model)}", metrics, cfg.benchmark)
    if index:
        meta["model-index"] = index
    base = shown(base_model)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {name} unlearning of {base}", "",
             f"`{base}` after machine unlearning with [moe-unlearn](https://pypi.org/project/moe-unlearn/) "
             f"{__version__}: base method `{method}`" + (f" with the MoE adapter(s) {', '.join(f'`{a}`' for a in adapters)}"
                                                          if adapters else " (no MoE adapter)")
             + (f", following the `{cfg.benchmark}` benchmark recipe." if cfg.benchmark else "."), ""]
    if failure:
        lines += [f"**Evaluation did not finish ({failure}): this card holds no measurement of forgetting. "
                  "Evaluate the model (`moe-unlearn eval`) before you rely on it.**", ""]
    lines += ["## How to load", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              'model = AutoModelForCausalLM.from_pretrained("THIS_REPO_OR_FOLDER")',
              'tokenizer = AutoTokenizer.from_pretrained("THIS_REPO_OR_FOLDER")', "```", "",
              "## Intended use", "",
              "Research on machine unlearning and a model whose owner asked for the listed data to be removed. "
              "It is not a guarantee that the data is gone: check the evidence below against your own threat model.", ""]
    lines += ["## What was forgotten", ""]
    if sources:
        lines += ["| role | source | split | kind |", "|---|---|---|---|"]
        lines += [f"| {role} | `{shown(s.path)}` | {s.split} | {s.kind} |" for role, s in sources]
    else:
        lines += ["The embedded fictitious-knowledge benchmark of moe-unlearn (`moe-unlearn benchmark build`)."]
    lines += ["", "Records used (after `data.select`" + (f" = {cfg.data.select}" if cfg.data.select else "") + "):", ""]
    lines += ["| set | " + " | ".join(("text", "qa", "mc", "completion")) + " |", "|---|---|---|---|---|"]
    lines += [f"| {k} | " + " | ".join(str(v.get(kind, "")) for kind in ("text", "qa", "mc", "completion")) + " |"
              for k, v in sizes.items()]
    settings = {method: _plain(cfg.section(method)), **{a: _plain(cfg.section(a)) for a in adapters}}
    train = cfg.train
    lines += ["", "## Method and settings", "",
              f"- steps trained: {STEPS[1](metrics)}; lr {train.lr}, schedule {train.schedule}, precision "
              f"{train.precision}, trained parameters {train.params}, batch {cfg.data.batch_size} "
              f"(+{cfg.data.retain_batch_size} retain) x grad_accum {train.grad_accum}, seed {cfg.seed}",
              "", "```yaml", yaml.safe_dump(settings, sort_keys=False).strip(), "```", ""]
    if not failure:
        lines += ["## How forgetting was measured", "",
                  "Forget and retain knowledge on the listed evaluation sets; routing stability (the share of each "
                  "token's original top-k experts the router still picks) and the routing-replay attack (forget "
                  "accuracy regained when the original routing is forced back) tell erasure from re-routing.", "",
                  "| headline | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in headline(metrics).items()]
        if cfg.benchmark and cfg.benchmark in TABLES:
            cols = [c for c in TABLES.get(cfg.benchmark).columns if c not in (STEPS, SECONDS)]
            lines += ["", f"As the `{cfg.benchmark}` paper reports it:", "",
                      "| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols),
                      "| " + " | ".join(_fmt(fn(metrics)) for _, fn in cols) + " |"]
        lines += ["", "Every metric, per layer and per example, is in the run's `metrics.json`; the full resolved "
                  "configuration is its `config.yaml` (`moe-unlearn unlearn config.yaml --out DIR` reruns it).", ""]
    lines += ["## Limitations", "",
              "Forgetting is measured, not guaranteed: these numbers cover the listed evaluation sets only. Routing "
              "stability and the replay attack say whether forgetting was done by re-routing (knowledge still in the "
              "experts) rather than by erasure; a relearning attack (`eval.metrics: [relearn]`) tests how fast it returns.", "",
              "## Citations", ""]
    lines += [f"- {CITATIONS[k]}" for k in [method, *adapters, *([cfg.benchmark] if cfg.benchmark else [])]
              if k in CITATIONS]
    lines += ["- moe-unlearn: machine unlearning for Mixture-of-Experts language models (https://pypi.org/project/moe-unlearn/)", ""]
    return "\n".join(lines)


def _plain(obj: Any) -> Any:
    from moe_unlearn.config import to_dict

    return to_dict(obj)


def write_model_card(model_dir: str | Path, cfg: Any, metrics: dict[str, Any], data: Any, *,
                     failure: str | None = None) -> Path:
    """Write model_dir/README.md for a run (data: its UnlearnData, for the record counts; failure:
    why its evaluation did not finish)."""
    base = cfg.model.path or (str(data.model) if getattr(data, "model", None) else "unknown")
    return atomic_write(Path(model_dir) / "README.md", render_card(cfg, metrics, data.sizes(), base, failure=failure))


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
