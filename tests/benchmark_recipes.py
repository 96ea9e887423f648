"""Helpers for the configs/benchmarks tests: the recipe files, issue-15 names, and hub ids -> fixtures."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO / "configs" / "benchmarks"
RECIPES = sorted(p for p in RECIPES_DIR.glob("*.yaml") if not p.name.startswith("_") and not p.stem.endswith("_finetune"))
FINETUNES = sorted(RECIPES_DIR.glob("*_finetune.yaml"))  # `moe-unlearn finetune`: the models the recipes start from
BASES = sorted(RECIPES_DIR.glob("_*.yaml"))
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hub"

# Names another issue (15: MUSE/TOFU conventions) adds; a recipe may use them before they exist here.
ISSUE15_METRICS = {"tofu_rouge", "tofu_model_utility"}
ISSUE15_DATA_KEYS = {"real_authors", "world_facts"}


def sources(data: dict[str, Any], evaluation: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every source mapping of a raw `data:` section (training, eval lists, issue-15 keys) and of
    the `eval:` section's knowmem_icl (MUSE's in-context examples)."""
    out = [data[k] for k in ("forget", "retain", "holdout", "utility_mc", *ISSUE15_DATA_KEYS) if isinstance(data.get(k), dict)]
    for lst in (data.get("eval") or {}).values():
        out += list(lst)
    out += [s for s in ((evaluation or {}).get("knowmem_icl") or {}).values() if isinstance(s, dict)]
    return out


def to_fixtures(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw recipe whose hub ids point at the fixture copies of their repositories."""
    raw = copy.deepcopy(raw)
    for src in sources(raw.get("data") or {}, raw.get("eval")):
        repo, sep, config = src["path"].partition(":")
        local = FIXTURES / repo
        assert local.is_dir(), f"no fixture for hub dataset {repo}"
        src["path"] = f"{local}{sep}{config}"
    return raw


def without_pending(raw: dict[str, Any]) -> tuple[dict[str, Any], set[str], set[str]]:
    """(raw minus the issue-15 names this branch does not have yet, metrics removed, data keys removed)."""
    from moe_unlearn.data import DataConfig
    from moe_unlearn.eval.metric import METRICS
    import moe_unlearn.eval  # noqa: F401  (fills METRICS)

    raw = copy.deepcopy(raw)
    metrics = (raw.get("eval") or {}).get("metrics") or []
    missing = {m for m in metrics if m not in METRICS}
    if metrics:
        raw["eval"]["metrics"] = [m for m in metrics if m not in missing]
    have = {f.name for f in dataclasses.fields(DataConfig)}
    dropped = {k for k in list(raw.get("data") or {}) if k not in have}
    for k in dropped:
        raw["data"].pop(k)
    return raw, missing, dropped
