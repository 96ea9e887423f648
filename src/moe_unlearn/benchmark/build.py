"""`build_benchmark`: generate the splits, train the base model, write files + manifest.json.

The output directory appears only when complete: everything is written into a temporary
sibling directory that is renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from moe_unlearn.benchmark.base_model import build_base_model
from moe_unlearn.benchmark.generator import check_forget, generate
from moe_unlearn.benchmark.presets import PRESETS
from moe_unlearn.errors import UserError
from moe_unlearn.paths import Inputs, check_destination, temp_sibling

KINDS = ("text", "qa", "mc")


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def check_out_dir(out_dir: Path, inputs: Inputs = ()) -> Path:
    """The resolved output directory, which must be absent or empty (never overwrite a user's
    files), not the current directory (the build replaces it), and apart from every input."""
    out = check_destination(out_dir, inputs, kind="dir")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output directory {out_dir} is not empty; choose a new or empty directory")
    if out == Path.cwd().resolve():
        raise UserError(f"--out {out_dir} is the current directory, which the build would replace; "
                        "name a new directory, e.g. --out bench")
    return out


def move_into_place(tmp: Path, out_dir: Path) -> bool:
    """Rename tmp to out_dir; False (tmp removed) if another builder got there first."""
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    try:
        os.replace(tmp, out_dir)
        return True
    except OSError:
        if not (out_dir / "manifest.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False


@contextlib.contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling to fill; it becomes out_dir only if the block completes."""
    tmp = temp_sibling(out_dir)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        move_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_benchmark(out_dir: str | Path, *, preset: str = "default", seed: int = 0, forget_domain: str | None = None,
                    forget_fraction: float = 1.0, progress: bool = True) -> Path:
    """Build the benchmark into out_dir (absent or empty); returns the manifest path."""
    cfg = PRESETS.get(preset)
    forget_name = check_forget(forget_domain, forget_fraction)
    out_dir = check_out_dir(Path(out_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    tmp = temp_sibling(out_dir)
    try:
        tmp.mkdir()
        bench = generate(cfg.generator, seed=seed, forget_domain=forget_name, forget_fraction=forget_fraction)
        files: dict[str, Any] = {}
        for name, split in bench.splits.items():
            files[name] = {}
            for kind in KINDS:
                rel = f"{name}/{kind}.jsonl"
                write_jsonl(tmp / rel, getattr(split, kind))
                files[name][kind] = rel
        write_jsonl(tmp / "utility_mc.jsonl", bench.utility_mc)
        model, tok, report = build_base_model(bench, cfg.model, cfg.train, seed=seed, progress=progress)
        model.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
        report["build_seconds"] = round(time.perf_counter() - start, 1)
        report["cpu_load_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
        manifest = {
            "model": "model", **files, "utility_mc": "utility_mc.jsonl", "seed": seed,
            "forget_domain": forget_name, "forget_fraction": forget_fraction, "preset": preset,
            "domains": bench.domains, "base_model_report": report, "build_config": asdict(cfg),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        move_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "manifest.json"
