"""manifest.json of a built benchmark (`moe-unlearn benchmark build`): paths and facts.

Relative paths are resolved against the manifest's directory; every listed file must exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moe_unlearn.errors import UserError
from moe_unlearn.paths import MAX_SIDE_FILE, regular_file
from moe_unlearn.vocab import SPLITS
KINDS = ("text", "qa", "mc")


@dataclass(frozen=True)
class Manifest:
    path: Path
    model: Path
    splits: dict[str, dict[str, Path]]  # split -> kind -> file
    utility_mc: Path | None
    seed: int | None = None
    forget_domain: str | None = None
    forget_fraction: float | None = None
    preset: str | None = None
    domains: list[str] = field(default_factory=list)
    base_model_report: dict[str, Any] = field(default_factory=dict)


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest; UserError for a missing/invalid file or a missing listed path."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.exists():
        raise UserError(f"manifest not found: {path}; build one with `moe-unlearn benchmark build --out DIR`")
    regular_file(path, "manifest", max_bytes=MAX_SIDE_FILE)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"manifest {path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"manifest {path} must hold a JSON object")

    def resolve(value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise UserError(f"manifest {path}: '{key}' must be a path string")
        p = Path(value) if Path(value).is_absolute() else path.parent / value
        if not p.exists():
            raise UserError(f"manifest {path}: '{key}' points to {p}, which does not exist")
        return p

    for key in ("model", "forget", "retain"):
        if key not in raw:
            raise UserError(f"manifest {path} has no '{key}' entry")
    splits: dict[str, dict[str, Path]] = {}
    for name in SPLITS:
        entry = raw.get(name) or {}
        if not isinstance(entry, dict):
            raise UserError(f"manifest {path}: '{name}' must map kinds (text, qa, mc) to files")
        unknown = set(entry) - set(KINDS)
        if unknown:
            raise UserError(f"manifest {path}: '{name}' has unknown kind(s) {sorted(unknown)}; use text, qa, mc")
        splits[name] = {kind: resolve(v, f"{name}.{kind}") for kind, v in entry.items()}
    utility = raw.get("utility_mc")
    return Manifest(
        path=path, model=resolve(raw["model"], "model"), splits=splits,
        utility_mc=None if utility is None else resolve(utility, "utility_mc"),
        seed=raw.get("seed"), forget_domain=raw.get("forget_domain"), forget_fraction=raw.get("forget_fraction"),
        preset=raw.get("preset"), domains=list(raw.get("domains", [])),
        base_model_report=dict(raw.get("base_model_report", {})),
    )
