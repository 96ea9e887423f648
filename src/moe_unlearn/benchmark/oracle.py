"""The retrain oracle of the embedded benchmark: the base model's recipe WITHOUT the forget set.

Every unlearning benchmark's gold standard is a model that never saw the forget data (TOFU's
retain model, MUSE's retrained model). The embedded benchmark can afford one: the same recipe
as the base model (`build_base_model`: tokenizer trained on the same corpus, so identical;
architecture, optimiser, schedule, seed) trained on the retain entities only, for the same
number of EPOCHS (so proportionally fewer steps). It is built on demand and cached next to the
benchmark's cache entry, as `<entry>-oracle<ORACLE_FORMAT>/` (model/ + oracle.json), atomically
and under a lock like the benchmark itself.

`reference_metrics` evaluates the original model and the oracle with a run's eval config: the
oracle's metrics are the `retrained` reference of every run (PrivLeak's retrained AUC, TOFU
forget quality, distance to the oracle), and both become the first rows of the report.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moe_unlearn.benchmark.base_model import ModelConfig, TrainConfig, build_base_model
from moe_unlearn.benchmark.build import atomic_dir
from moe_unlearn.benchmark.cache import cache_root, check_can_build, config_entry_name, entry_lock
from moe_unlearn.benchmark.generator import Benchmark, GeneratorConfig, generate
from moe_unlearn.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from moe_unlearn.eval.context import EvalCache

# Bump when the oracle's recipe changes in a way the benchmark's build config does not show.
ORACLE_FORMAT = 1
# the metrics that read the retrained reference (recomputed for the oracle against itself)
SELF_REFERENCED = ("privacy", "forget_quality", "oracle_distance", "forgotten")


def _manifest(path: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(path)
    path = path / "manifest.json" if path.is_dir() else path
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path} is not a readable benchmark manifest.json") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("build_config"), dict):
        raise UserError(f"{path} is not a manifest of the embedded benchmark (no build_config); the retrain "
                        "oracle exists only for `moe-unlearn benchmark build` output")
    return path, raw


def oracle_dir(manifest: str | Path) -> Path:
    """Where the oracle of this benchmark is cached: next to its cache entry (the entry's name + "-oracle1")."""
    _, raw = _manifest(manifest)
    entry = config_entry_name(raw.get("preset", "custom"), raw["build_config"], raw.get("seed"),
                              raw.get("forget_domain"), raw.get("forget_fraction"))
    return cache_root() / f"{entry}-oracle{ORACLE_FORMAT}"


def retain_only(bench: Benchmark) -> Benchmark:
    """The benchmark with the forget entities' training records removed (what the oracle trains on)."""
    forget = {(r["domain"], r["entity"]) for r in bench.splits["forget"].qa}
    keep = [r for r in bench.train_qa if (r["domain"], r["entity"]) not in forget]
    text = [r for r in bench.train_text if (r["domain"], r["entity"]) not in forget]
    return replace(bench, train_qa=keep, train_text=text)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_oracle(manifest: str | Path, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Train the oracle of a built benchmark into out_dir (absent or empty); returns out_dir/model."""
    path, raw = _manifest(manifest)
    cfg = raw["build_config"]
    gen, m, t = GeneratorConfig(**cfg["generator"]), ModelConfig(**cfg["model"]), TrainConfig(**cfg["train"])
    seed = int(raw.get("seed") or 0)
    bench = generate(gen, seed=seed, forget_domain=raw.get("forget_domain"),
                     forget_fraction=float(raw.get("forget_fraction") or 1.0))
    if _read_jsonl(path.parent / raw["forget"]["qa"]) != bench.splits["forget"].qa:
        raise UserError(f"{path}: its forget set is not what this version's generator makes from its build "
                        "config; rebuild the benchmark to get a retrain oracle")
    retain = retain_only(bench)
    share = (len(retain.train_qa) + len(retain.train_text)) / (len(bench.train_qa) + len(bench.train_text))
    steps = max(1, round(t.steps * share))  # same epochs over the smaller training set
    start = time.perf_counter()
    model, tok, report = build_base_model(retain, m, replace(t, steps=steps), seed=seed, progress=progress)
    from moe_unlearn.models.loading import load_tokenizer

    base_tok = load_tokenizer(path.parent / raw["model"])
    if tok.get_vocab() != base_tok.get_vocab():  # the oracle must read the same tokens as the base model
        raise RuntimeError("the oracle's tokenizer differs from the benchmark's; tokenizer training is not deterministic")
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp / "model")
        base_tok.save_pretrained(tmp / "model")
        info = {"format": ORACLE_FORMAT, "benchmark": str(path), "steps": steps, "base_steps": t.steps,
                "train_share": round(share, 4), "build_seconds": round(time.perf_counter() - start, 1),
                "report": report}
        (tmp / "oracle.json").write_text(json.dumps(info, indent=2) + "\n")
    return Path(out_dir) / "model"


def cached_oracle(manifest: str | Path, *, progress: bool = False) -> Path:
    """Model directory of the benchmark's oracle, trained first (minutes) if not cached."""
    out = oracle_dir(manifest)
    if not (out / "oracle.json").is_file():
        check_can_build("retrain oracle")
        out.parent.mkdir(parents=True, exist_ok=True)
        with entry_lock(out.parent / f"{out.name}.lock"):
            for stale in out.parent.glob(f".{out.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if not (out / "oracle.json").is_file():
                build_oracle(manifest, out, progress=progress)
    return out / "model"


def oracle_metrics(manifest: str | Path, data: Any, eval_cfg: Any, *, original_routing: Any = None,
                   progress: bool = False) -> dict[str, Any]:
    """The oracle's metrics.json content (built first if not cached), evaluated with eval_cfg on data:
    the `retrained` reference of an unlearned model evaluated the same way."""
    from moe_unlearn.eval import evaluate_model
    from moe_unlearn.models import load_model

    net, tok = load_model(cached_oracle(manifest, progress=progress))
    metrics = evaluate_model(net, tok, data, eval_cfg, original_routing=original_routing, progress=progress)
    return {"reference": "oracle", "model": str(oracle_dir(manifest) / "model"), **metrics}


@dataclass
class References:
    """The two rows every run is read between, and the reference the runs are evaluated against."""

    original: dict[str, Any]  # the original model's metrics (against the oracle when there is one)
    oracle: dict[str, Any] | None  # the oracle's row: its reference-dependent metrics against itself
    retrained: dict[str, Any] | None  # the oracle's plain metrics: every run's `retrained` reference


def reference_metrics(manifest: str | Path, data: Any, eval_cfg: Any, *, oracle: bool = True,
                      progress: bool = False, cache: EvalCache | None = None) -> References:
    """Evaluate the original model and (oracle=True) the retrain oracle with eval_cfg on data,
    routing stability and replay against the original model's routing. cache (an EvalCache)
    receives the original model's results, which every run's step-0 evaluation reads."""
    from moe_unlearn.eval import capture_eval_routing, evaluate_model
    from moe_unlearn.models import load_model

    path, raw = _manifest(manifest)
    base, tok = load_model(path.parent / raw["model"])
    routing = capture_eval_routing(base, tok, data, eval_cfg, cache=cache)
    row, retrained = None, None
    if oracle:
        start = time.perf_counter()
        retrained = oracle_metrics(path, data, eval_cfg, original_routing=routing, progress=progress)
        again = [m for m in SELF_REFERENCED if m in eval_cfg.metrics]
        redo = {}
        if again:  # PrivLeak 0, forget quality 1, distance 0 by construction, computed by the same code
            net, _ = load_model(cached_oracle(path))
            redo = evaluate_model(net, tok, data, replace(eval_cfg, metrics=again), original_routing=routing,
                                  retrained=retrained, progress=False)
        row = {**_row("oracle"), **retrained, **{k: redo[k] for k in again if k in redo},
               "timing": {"total_seconds": time.perf_counter() - start}}
    start = time.perf_counter()
    metrics = evaluate_model(base, tok, data, eval_cfg, original_routing=routing, retrained=retrained, progress=progress,
                             cache=cache)
    original = {**_row("original"), "steps": 0, **metrics, "timing": {"total_seconds": time.perf_counter() - start}}
    return References(original, row, retrained)


def _row(name: str) -> dict[str, Any]:
    return {"reference": name, "method": None, "adapters": [], "steps": None}
