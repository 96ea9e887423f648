"""Helpers for the reliability tests: file-tree snapshots, the one-line error check, the CLI script."""

from __future__ import annotations

import os
import pickle
import re
import sys
from pathlib import Path

import yaml

SCRIPT = Path(sys.executable).with_name("moe-unlearn")  # the console script of this venv
TIMING_KEYS = ("timing", "eval_seconds", "resumed")


def snapshot(*roots: Path, skip: Path | None = None) -> dict[str, tuple[str, bytes, int]]:
    """Every file and folder under roots: kind, bytes (files) and mtime_ns (files), minus `skip`."""
    seen: dict[str, tuple[str, bytes, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if skip is not None and (here == skip or skip in here.parents):
                dirnames[:] = []
                continue
            for d in dirnames:
                if skip is None or here / d != skip:
                    seen[str(here / d)] = ("dir", b"", 0)
            for f in filenames:
                p = here / f
                if skip is not None and p == skip:
                    continue
                seen[str(p)] = ("file", p.read_bytes(), p.stat().st_mtime_ns)
    return seen


def changed(before: dict, after: dict) -> list[str]:
    """Paths added, removed or modified between two snapshots."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def assert_one_line(err: str, code: int, phrase: str) -> str:
    """stderr is exactly one 'moe-unlearn: error|failed: ...' line matching phrase; returns it."""
    assert "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err[-2000:]}"
    prefix = "moe-unlearn: error: " if code == 2 else "moe-unlearn: failed: "
    assert lines[0].startswith(prefix), lines[0]
    assert re.search(phrase, lines[0]), f"{phrase!r} not in {lines[0]!r}"
    return lines[0]


def write_yaml(path: Path, raw: dict | str) -> Path:
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def reproducible(metrics: dict) -> dict:
    """metrics.json without wall-clock keys: what must be identical across runs."""
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


class _Payload:
    """Unpickling this runs os.mkdir(sentinel): proof that a pickle was loaded."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return os.mkdir, (self.sentinel,)


def malicious_pickle(path: Path, sentinel: Path) -> None:
    """Write a pickle at path that creates the folder `sentinel` when loaded."""
    path.write_bytes(pickle.dumps(_Payload(sentinel), protocol=2))
