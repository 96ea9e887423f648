"""Helpers for the reliability tests: file-tree snapshots, the one-line error check, the CLI script."""

from __future__ import annotations

import os
import pickle
import re
import sys
from pathlib import Path
from typing import Iterable

import yaml

SCRIPT = Path(sys.executable).with_name("moe-unlearn")  # the console script of this venv
TIMING_KEYS = ("timing", "eval_seconds", "resumed")
ROUTER = "model.layers.0.mlp.gate.weight"  # the tensor the broken model folders (conftest.py) damage


def snapshot(*roots: Path, skip: Path | Iterable[Path] | None = None) -> dict[str, tuple[str, bytes, int]]:
    """Every file, folder and link under roots: kind, bytes (files), mtime_ns (files) or target
    (links), minus the paths in `skip` (outputs a command may write)."""
    skipped = {skip} if isinstance(skip, Path) else set(skip or ())
    seen: dict[str, tuple[str, bytes, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if here in skipped or any(s in here.parents for s in skipped):
                dirnames[:] = []
                continue
            for name in [*dirnames, *filenames]:
                p = here / name
                if p in skipped:
                    continue
                if p.is_symlink():
                    seen[str(p)] = ("link", os.readlink(p).encode(), 0)
                elif p.is_dir():
                    seen[str(p)] = ("dir", b"", 0)
                else:
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
