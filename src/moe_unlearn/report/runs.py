"""Read runs for the report: run directories, metrics.json files or a demo results.json list."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moe_unlearn.errors import UserError


@dataclass
class Run:
    """One evaluated model: its metrics.json, and the run's config.yaml / log.jsonl when present."""

    name: str
    metrics: dict[str, Any]
    config: dict[str, Any] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reference(self) -> str | None:
        """"original" or "oracle" for the reference rows every run is read between, else None."""
        ref = self.metrics.get("reference")
        return ref if ref in REFERENCE_LABELS else None


# reference rows (metrics.json with a "reference" key), in the order they head the report
REFERENCE_LABELS = {"original": "original model", "oracle": "retrain oracle"}


def run_label(metrics: dict[str, Any], fallback: str) -> str:
    """'graddiff+grip' from method and adapters, a reference's label, else the fallback (directory name)."""
    if metrics.get("reference") in REFERENCE_LABELS:
        return REFERENCE_LABELS[metrics["reference"]]
    method = metrics.get("method")
    if not method:
        return fallback
    adapters = [a for a in metrics.get("adapters") or [] if a]
    return "+".join([str(method), *map(str, adapters)])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a readable JSON file ({type(e).__name__}); re-run the command that wrote it") from None


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a killed run: skip it, the rest is still a curve
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _check_metrics(obj: Any, where: Path) -> dict[str, Any]:
    if not isinstance(obj, dict) or not any(k in obj for k in ("forget", "retain", "routing")):
        raise UserError(f"{where} does not hold run metrics (no forget/retain/routing keys); pass a run directory")
    return obj


def load_runs(paths: list[Path]) -> list[Run]:
    """Runs from each path: a run dir (metrics.json [+ config.yaml, log.jsonl]), a metrics.json,
    or a demo results.json (a list of metrics objects, plus the demo's reference/*/metrics.json).
    Reference rows (original model, retrain oracle) come first; names are made unique."""
    if not paths:
        raise UserError("no runs given; pass one or more run directories (each with metrics.json)")
    runs: list[Run] = []
    for p in paths:
        if p.is_dir():
            target = p / "metrics.json" if (p / "metrics.json").is_file() else p / "results.json"
            if not target.is_file():
                raise UserError(f"{p} has no metrics.json; pass a finished run directory (moe-unlearn unlearn --out DIR)")
        elif p.is_file():
            target = p
        else:
            raise UserError(f"run directory not found: {p}")
        obj = _read_json(target)
        if isinstance(obj, list):  # demo results.json, and the demo's reference rows next to it
            for name in REFERENCE_LABELS:
                ref = target.parent / "reference" / name / "metrics.json"
                if ref.is_file():
                    runs.append(Run(REFERENCE_LABELS[name], _check_metrics(_read_json(ref), ref)))
            for i, entry in enumerate(obj):
                m = _check_metrics(entry, target)
                runs.append(Run(run_label(m, f"{target.parent.name}[{i}]"), m))
            continue
        m = _check_metrics(obj, target)
        folder = target.parent
        cfg_path = folder / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else None
        runs.append(Run(run_label(m, folder.name), m, cfg if isinstance(cfg, dict) else None, _read_log(folder / "log.jsonl")))
    order = list(REFERENCE_LABELS)
    runs.sort(key=lambda r: order.index(r.reference) if r.reference else len(order))  # references head the table
    seen: dict[str, int] = {}
    for r in runs:
        n = seen.get(r.name, 0)
        seen[r.name] = n + 1
        if n:
            r.name = f"{r.name} #{n + 1}"
    return runs
