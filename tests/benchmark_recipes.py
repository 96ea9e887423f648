"""Helpers for the configs/benchmarks tests: the recipe files and issue-15 names (hub ids ->
fixtures: bench/fixtures.py)."""

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

# Names another issue (15: MUSE/TOFU conventions) adds; a recipe may use them before they exist here.
ISSUE15_METRICS = {"tofu_rouge", "tofu_model_utility"}
ISSUE15_DATA_KEYS = {"real_authors", "world_facts"}


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
