"""The recipes' hub datasets on fixtures: every source a recipe names, pointed at its copy in
tests/fixtures/hub (same repository layout, real schemas, a few rows), for the recipe tests and
the CPU rehearsal alike."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "hub"
DATA_KEYS = ("forget", "retain", "holdout", "utility_mc", "real_authors", "world_facts")


def sources(data: dict[str, Any], evaluation: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every source mapping of a raw `data:` section (training, eval lists, TOFU's extra sets) and
    of the `eval:` section's knowmem_icl (MUSE's in-context examples)."""
    out = [data[k] for k in DATA_KEYS if isinstance(data.get(k), dict)]
    for lst in (data.get("eval") or {}).values():
        out += list(lst)
    out += [s for s in ((evaluation or {}).get("knowmem_icl") or {}).values() if isinstance(s, dict)]
    return out


def to_fixtures(raw: dict[str, Any], fixtures: Path = FIXTURES) -> dict[str, Any]:
    """A copy of a raw recipe whose hub ids (`repo[:config]`) point at `fixtures`/repo."""
    raw = copy.deepcopy(raw)
    for src in sources(raw.get("data") or {}, raw.get("eval")):
        repo, sep, config = src["path"].partition(":")
        local = fixtures / repo
        if not local.is_dir():
            raise FileNotFoundError(f"no fixture for hub dataset {repo} in {fixtures}")
        src["path"] = f"{local}{sep}{config}"
    return raw
