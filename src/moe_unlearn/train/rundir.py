"""The run directory of `unlearn`: one writer at a time, inputs never touched, atomic results.

    OUT/.moe-unlearn.lock   the holder's pid, flock'ed while a process writes OUT
    OUT/config.yaml         the resolved config (written atomically)
    OUT/log.jsonl           one line per step; on resume cut back to the checkpoint
    OUT/checkpoints/        step-NNNNNN/ (train/checkpoint.py)
    OUT/model/              appears only complete (written beside it, then renamed)
    OUT/metrics.json        written atomically, last
    OUT/tracking/           the experiment trackers' files (train.log_with), when they write any

`RunDir.check()` refuses what it can before anything heavy runs; `RunDir.claim()` takes the
lock and prepares the directory; the engine calls `save_model`, `write_metrics` and `release`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import yaml

from moe_unlearn.config import parse_yaml
from moe_unlearn.core.dist import broadcast_object, is_main
from moe_unlearn.data.sources import SourceConfig
from moe_unlearn.errors import RunFailure, UserError, os_failure
from moe_unlearn.leftovers import clear_leftovers
from moe_unlearn.paths import LOCK_NAME, DirLock, Inputs, atomic_dir, atomic_write, check_destination, remove
from moe_unlearn.train import checkpoint

OUTPUTS = ("model", "checkpoints", "config.yaml", "log.jsonl", "metrics.json", "tracking")
FILES = ("config.yaml", "log.jsonl", "metrics.json")  # never links (model/ and checkpoints/ may be)
T = TypeVar("T")


def run_inputs(files: Iterable[str], model: Path | None, data: Any, manifest: Path | None) -> list[tuple[str, Any]]:
    """What a run reads and must never write: model dir, every data source the data config
    names (training and evaluation), config files, benchmark dir."""
    found: list[tuple[str, Any]] = [("model dir", model)]
    found += [("data file", path) for path in _source_paths(data)]
    found += [("config", f) for f in files]
    if manifest is not None:
        found.append(("benchmark dir", Path(manifest).parent))
    return found


def _source_paths(obj: Any) -> Iterator[str]:
    if isinstance(obj, SourceConfig):
        yield obj.path
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _source_paths(getattr(obj, f.name))
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _source_paths(item)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'train.lr: 0.001 -> 0.002' for each dotted key whose value differs."""
    a, b = _flat(old), _flat(new)
    missing = "(absent)"

    def show(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    return [f"{k}: {show(a.get(k, missing))} -> {show(b.get(k, missing))}" for k in sorted(a.keys() | b.keys())
            if a.get(k, missing) != b.get(k, missing)]


class RunDir:
    """OUT of one `unlearn` run; see the module docstring for its layout."""

    def __init__(self, path: str | Path, inputs: Inputs, *, overwrite: bool = False, resume: bool = False) -> None:
        self.path = Path(path)
        self.inputs = list(inputs)
        self.overwrite, self.resume = overwrite, resume
        self.lock: DirLock | None = None
        self.created = False

    # -- before anything heavy
    def check(self) -> None:
        """Refuse a bad --out without writing anything: inputs (also through symlinks inside
        OUT), a used dir without --overwrite/--resume, --resume with no run, a live writer."""
        if self.overwrite and self.resume:
            raise UserError("use either --overwrite (start again) or --resume (continue), not both")
        check_destination(self.path, self.inputs, kind="dir")
        if not self.path.is_dir():
            if self.resume:
                raise UserError(f"--resume: {self.path} holds no run to continue; drop --resume to start one")
            return
        for name in OUTPUTS:  # e.g. OUT/model a symlink to the input model
            check_destination(self.path / name, self.inputs, what=f"--out {self.path}:", kind="any")
            if self.resume and name in FILES and (self.path / name).is_symlink():
                raise UserError(f"--resume: {self.path / name} is a symlink; the run's own files are never written "
                                "through a link: replace it with the file, or start again with --overwrite")
        if self.lock is None:
            DirLock.check_free(self.path)
        entries = [p for p in self.path.iterdir() if p.name != LOCK_NAME]
        if entries and not (self.overwrite or self.resume):
            raise UserError(f"output dir {self.path} is not empty; pass --overwrite to replace its results "
                            "or --resume to continue")
        if self.resume and not (self.path / "config.yaml").exists() and not checkpoint.latest(self.path / "checkpoints"):
            raise UserError(f"--resume: {self.path} holds no run to continue (no config.yaml, no checkpoint); "
                            "drop --resume to start one")

    # -- the writer
    def claim(self, config: dict[str, Any]) -> None:
        """Create OUT, take its lock, clear it (--overwrite) or check the run (--resume), write config.yaml."""
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock = DirLock.acquire(self.path)
        try:
            self.check()  # again under the lock: another process may have written meanwhile
            lock_file = self.path / LOCK_NAME  # written when this process took the lock
            locked_at = lock_file.stat().st_mtime if lock_file.is_file() else None
            for name in OUTPUTS:  # leftovers of atomic writes a killed run did not finish
                clear_leftovers(self.path / name, locked_at=locked_at)
            if self.overwrite:  # only what a run writes (links removed, never followed); other files stay
                for name in OUTPUTS:
                    remove(self.path / name)
            elif self.resume:
                self._check_resume(config)
            atomic_write(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        except BaseException:
            self.release(remove_if_created=True)
            raise

    def _check_resume(self, config: dict[str, Any]) -> None:
        """The run's own config is the checkpoint's (else config.yaml's); refuse a different one by key."""
        latest = checkpoint.latest(self.path / "checkpoints")
        own = checkpoint.read_meta(latest).get("config") if latest is not None else None
        source = latest / "meta.json" if own is not None else self.path / "config.yaml"
        if own is None:
            try:
                own = parse_yaml(source.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
                own = None
            if not isinstance(own, dict) or not own:
                raise UserError(f"--resume: {source} is empty or damaged, so the run's config is unknown; "
                                "restore it, or start again with --overwrite")
        changed = config_diff(own, config)
        if changed:
            more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
            raise UserError(f"--resume needs the run's own config; these keys differ from {source}: "
                            f"{'; '.join(changed[:3])}{more}")

    def truncate_log(self, offset: int) -> None:
        """Drop log lines written after the checkpoint; a shortened or deleted log is never padded."""
        log = self.path / "log.jsonl"
        size = log.stat().st_size if log.exists() else 0
        if size > offset:
            os.truncate(log, offset)

    def save_model(self, save: Callable[[Path], T], last_checkpoint: Path | None) -> T:
        """save(dir) writes the model (on the main process) into a sibling of OUT/model, which
        replaces model/ only when complete; returns what save returns."""
        final = self.path / "model"
        if not is_main():  # the other processes take part in gathering the weights, and write nothing
            return save(broadcast_object(None))
        try:
            with atomic_dir(final) as tmp:
                broadcast_object(tmp)  # the folder the other processes pass to save_pretrained
                result = save(tmp)
        except Exception as e:  # OSError, and torch's / safetensors' own words for a full disk
            reason = os_failure(e)
            if reason is None:
                raise
            kept = f"checkpoint {last_checkpoint.name} is kept" if last_checkpoint else "no checkpoint was written"
            raise RunFailure(f"could not save the model to {final} ({reason}); nothing "
                             f"half-written was left; {kept}: free space and rerun with --resume") from None
        return result

    def write_metrics(self, metrics: dict[str, Any], default: Callable[[Any], Any]) -> Path:
        return atomic_write(self.path / "metrics.json", json.dumps(metrics, indent=2, default=default))

    @contextlib.contextmanager
    def released_on_error(self) -> Iterator[None]:
        """Release the lock if the block fails (the caller keeps it on success)."""
        try:
            yield
        except BaseException:
            self.release()
            raise

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Release the lock when the block ends, however it ends."""
        try:
            yield
        finally:
            self.release()

    def release(self, *, remove_if_created: bool = False) -> None:
        """Drop the lock; remove OUT again if this run created it and left it empty."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if remove_if_created and self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()
