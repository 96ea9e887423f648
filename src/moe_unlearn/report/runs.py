"""Read runs for the report: run directories, metrics.json files or a demo results.json list."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moe_unlearn.config import parse_yaml
from moe_unlearn.errors import UserError
from moe_unlearn.eval.schema import checked_keys, run_key
from moe_unlearn.paths import MAX_SIDE_FILE, regular_file

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # the only way a UTF-8 JSON file holds a surrogate


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
        ref = REFERENCE.read(self.metrics)
        return ref if ref in REFERENCE_LABELS else None


# reference rows (metrics.json with a "reference" key), in the order they head the report
REFERENCE_LABELS = {"original": "original model", "oracle": "retrain oracle"}
REFERENCE, METHOD, ADAPTERS = run_key("reference"), run_key("method"), run_key("adapters")


def run_label(metrics: dict[str, Any], fallback: str) -> str:
    """'graddiff+grip' from method and adapters, a reference's label, else the fallback (directory name)."""
    if REFERENCE.read(metrics) in REFERENCE_LABELS:
        return REFERENCE_LABELS[REFERENCE.read(metrics)]
    method = METHOD.read(metrics)
    if not method:
        return fallback
    adapters = [a for a in ADAPTERS.read(metrics) or [] if a]
    return " ".join("+".join([str(method), *map(str, adapters)]).split())  # one line in any table


def printable(text: str) -> str:
    """text with each lone surrogate written as an escape: a folder name's undecodable byte (kept by
    Python as U+DC80..U+DCFF) as '\\xff', a JSON '\\ud800' as '\\ud800'. Fonts and UTF-8 files refuse
    lone surrogates, and an escape still tells two names apart."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(_escape(c) if "\ud800" <= c <= "\udfff" else c for c in text)


def _escape(surrogate: str) -> str:
    code = ord(surrogate)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _printable(obj: Any) -> Any:
    """obj (parsed JSON) with every string and key made printable."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, list):
        return [_printable(v) for v in obj]
    if isinstance(obj, dict):
        return {printable(k): _printable(v) for k, v in obj.items()}
    return obj


def _read_json(path: Path) -> Any:
    regular_file(path, "run file", max_bytes=MAX_SIDE_FILE)  # a FIFO or device is never opened
    try:
        text = path.read_text(encoding="utf-8")
        obj = json.loads(text)
        return _printable(obj) if _SURROGATE_ESCAPE.search(text) else obj
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{path} is not a readable JSON file ({type(e).__name__}); re-run the command that wrote it") from None


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut by a killed run, or damaged: skip it, the rest is still a curve
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_config(path: Path) -> dict[str, Any] | None:
    """config.yaml of a run, or None when absent or damaged (the report reads metrics only)."""
    try:
        cfg = parse_yaml(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    return cfg if isinstance(cfg, dict) else None


def _check_metrics(obj: Any, where: Path) -> dict[str, Any]:
    """obj, if it is run metrics whose every value the report reads has the right type."""
    if not isinstance(obj, dict) or not any(k in obj for k in ("forget", "retain", "routing")):
        raise UserError(f"{where} does not hold run metrics (no forget/retain/routing keys); pass a run directory")
    for key in checked_keys():
        node: Any = obj
        for depth, part in enumerate(key.path):
            if node is None:
                break
            if not isinstance(node, dict):
                raise UserError(f"{where}: '{'.'.join(key.path[:depth])}' must be a mapping, got {type(node).__name__}; "
                                "is this a moe-unlearn metrics.json?")
            node = node.get(part)
        else:
            if node is not None and key.shape is not None and not key.shape.check(node):
                raise UserError(f"{where}: '{key.dotted}' must be {key.shape.want}, got {json.dumps(node)[:60]}; "
                                "is this a moe-unlearn metrics.json?")
    return obj


def demo_run_dir(out: Path, label: str, seed: int, first_seed: int) -> Path:
    """Where the demo writes a run: runs/<label> for the first seed (the layout of a one-seed
    demo), runs/seed-<s>/<label> after it."""
    return out / "runs" / label if seed == first_seed else out / "runs" / f"seed-{seed}" / label


def _demo_side_files(root: Path, entry: dict[str, Any], first_seed: int) -> Path | None:
    """The run folder of a demo results.json entry ("run" label and "seed"), when it is there:
    its config.yaml and log.jsonl draw the training curves and trade-offs, as in the demo's own
    report. A label that is not one plain folder name is never followed."""
    label, seed = entry.get("run"), entry.get("seed")
    if not isinstance(label, str) or label in ("", ".", "..") or Path(label).name != label or type(seed) is not int:
        return None
    folder = demo_run_dir(root, label, seed, first_seed)
    return folder if folder.is_dir() else None


def load_runs(paths: list[Path]) -> list[Run]:
    """Runs from each path: a run dir (metrics.json [+ config.yaml, log.jsonl]), a metrics.json,
    or a demo results.json (a list of metrics objects, plus the demo's reference/*/metrics.json
    and each run's config.yaml / log.jsonl from its folder under runs/ when present).
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
            if not obj:
                raise UserError(f"{target} lists no runs; pass a finished run directory or a demo's results.json")
            for name in REFERENCE_LABELS:
                ref = target.parent / "reference" / name / "metrics.json"
                if ref.is_file():
                    runs.append(Run(REFERENCE_LABELS[name], _check_metrics(_read_json(ref), ref)))
            seeds = [e["seed"] for e in obj if isinstance(e, dict) and type(e.get("seed")) is int]
            first_seed = min(seeds) if seeds else None
            for i, entry in enumerate(obj):
                m = _check_metrics(entry, target)
                run_folder = _demo_side_files(target.parent, m, first_seed) if first_seed is not None else None
                side = ((_read_config(run_folder / "config.yaml"), _read_log(run_folder / "log.jsonl")) if run_folder
                        else (None, []))
                runs.append(Run(run_label(m, f"{target.parent.name}[{i}]"), m, *side))
            continue
        m = _check_metrics(obj, target)
        folder = target.parent
        runs.append(Run(run_label(m, folder.name), m, _read_config(folder / "config.yaml"), _read_log(folder / "log.jsonl")))
    order = list(REFERENCE_LABELS)
    runs.sort(key=lambda r: order.index(r.reference) if r.reference else len(order))  # references head the table
    seen: dict[str, int] = {}
    for r in runs:
        r.name = printable(r.name)  # a run folder's name may hold bytes that are not UTF-8
        n = seen.get(r.name, 0)
        seen[r.name] = n + 1
        if n:
            r.name = f"{r.name} #{n + 1}"
    return runs
