"""The user-level cache of built benchmarks, keyed by a hash of the full build configuration.

Concurrent builders (pytest-xdist workers) take a per-entry lock file, so one builds while the
others wait; without fcntl (Windows) the first rename wins. Leftover temporary directories of
interrupted builds are removed under the lock and never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator

from moe_unlearn.benchmark.build import build_benchmark, check_out_dir, move_into_place, temp_sibling
from moe_unlearn.benchmark.generator import check_forget
from moe_unlearn.benchmark.presets import PRESETS
from moe_unlearn.core.dist import world_size
from moe_unlearn.data.config import AUTO, DataConfig
from moe_unlearn.errors import UserError

# Bump when the generator or training changes in a way the config does not show.
BUILD_FORMAT = 2  # 2: answers balanced per split and attribute (generator.balanced_facts)


def cache_root() -> Path:
    """$MOE_UNLEARN_CACHE, else $XDG_CACHE_HOME/moe-unlearn, else ~/.cache/moe-unlearn."""
    if os.environ.get("MOE_UNLEARN_CACHE"):
        return Path(os.environ["MOE_UNLEARN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "moe-unlearn"


def entry_name(preset: str, seed: int, forget_domain: str | None, forget_fraction: float) -> str:
    """'<preset>-<16 hex>' from the preset's full config, the arguments and BUILD_FORMAT."""
    return config_entry_name(preset, asdict(PRESETS.get(preset)), seed, check_forget(forget_domain, forget_fraction),
                             forget_fraction)


def config_entry_name(preset: str, config: dict, seed: int, forget_domain: str, forget_fraction: float) -> str:
    """entry_name from a build config as a dict (e.g. a manifest's `build_config`)."""
    key = {"format": BUILD_FORMAT, "config": config, "seed": seed, "forget_domain": forget_domain,
           "forget_fraction": forget_fraction}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"{preset}-{digest}"


def check_can_build(what: str) -> None:
    """A build trains and evaluates in this process alone: inside a started process group the
    others would wait for it in a collective, so it is refused there (build it before launching)."""
    if world_size() > 1:
        raise UserError(f"the {what} is not in the cache and {world_size()} processes run: build it once first "
                        "with one process (`moe-unlearn benchmark build`, or any single-process command using it)")


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no advisory locks: rely on "first rename wins"
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_benchmark(preset: str = "default", seed: int = 0, forget_domain: str | None = None,
                     forget_fraction: float = 1.0, *, out_dir: str | Path | None = None,
                     progress: bool = False) -> Path:
    """Manifest path of the cached build (built first if absent); copied to out_dir if given."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    name = entry_name(preset, seed, forget_domain, forget_fraction)
    entry = root / name
    if out_dir is not None:
        out_dir = check_out_dir(Path(out_dir), [("benchmark cache entry", entry)])
    if not (entry / "manifest.json").is_file():
        check_can_build("benchmark")
        with entry_lock(root / f"{name}.lock"):
            for stale in root.glob(f".{name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if not (entry / "manifest.json").is_file():
                build_benchmark(entry, preset=preset, seed=seed, forget_domain=forget_domain,
                                forget_fraction=forget_fraction, progress=progress)
    if out_dir is None:
        return entry / "manifest.json"
    # copy next to out_dir, then rename: an interrupted copy never leaves a manifest without its files
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    try:
        shutil.copytree(entry, tmp)
        move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out / "manifest.json"


def resolve_manifest(cfg: DataConfig, *, progress: bool = False) -> DataConfig:
    """cfg with `manifest: auto` replaced by the cached default benchmark's manifest (built on first use)."""
    if cfg.manifest != AUTO:
        return cfg
    return replace(cfg, manifest=str(cached_benchmark(progress=progress)))
