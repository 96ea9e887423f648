"""Atomic, resumable checkpoints: checkpoints/step-NNNNNN/{trainable.safetensors, state.pt, meta.json}.

A checkpoint is written into a temporary folder and moved into place with os.replace, so a
run killed at any moment (even kill -9) leaves either the previous checkpoint or the new
one, never half of one. Tensors of the model go to safetensors; optimizer, scheduler, RNG
and adapter state to state.pt, read back with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from moe_unlearn.errors import RunFailure, UserError, os_failure

PREFIX = "step-"
NAME = re.compile(rf"^{PREFIX}(\d+)$")  # only these folders are ours: a user's backup copy is left alone


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from, in weights_only-loadable types."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def name_of(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def _ours(folder: Path) -> list[Path]:
    return [p for p in folder.glob(f"{PREFIX}*") if NAME.match(p.name) and p.is_dir() and not p.is_symlink()]


def save(folder: Path, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any],
         config: dict[str, Any] | None = None) -> Path:
    """Write checkpoint `step` atomically (meta.json holds the step and the run's config); older
    checkpoints are removed afterwards. A failed write (disk full) leaves the previous one."""
    tmp = begin(folder, step)
    if tmp is None:  # same step, same state (e.g. Ctrl-C right after a checkpoint)
        return folder / name_of(step)
    return commit(folder, step, tmp, tensors, state, config)


def begin(folder: Path, step: int) -> Path | None:
    """The empty temporary folder checkpoint `step` is written into (None: it exists already).

    A sharded run writes its engine state there from every process (accelerate's save_state)
    before the main process commits."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / name_of(step) / "meta.json").is_file():
        return None
    for stale in folder.glob(f".tmp-{PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder / f".tmp-{name_of(step)}"
    tmp.mkdir()
    return tmp


def commit(folder: Path, step: int, tmp: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any],
           config: dict[str, Any] | None = None) -> Path:
    """Write the tensors and state into tmp, then move it into place and drop older checkpoints
    (only folders named step-N: a user's copies beside them stay)."""
    final = folder / name_of(step)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "trainable.safetensors"))
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, "config": config}))
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)  # an incomplete folder without meta.json
        os.replace(tmp, final)
    except Exception as e:  # OSError, and torch's / safetensors' own words for a full disk
        shutil.rmtree(tmp, ignore_errors=True)  # never half a checkpoint, whatever failed
        reason = os_failure(e)
        if reason is None:
            raise
        kept = latest(folder)
        raise RunFailure(f"could not write checkpoint {final.name} ({reason}); "
                         f"{'checkpoint ' + kept.name + ' is kept' if kept else 'no checkpoint is kept'}: "
                         "free space and rerun with --resume") from None
    for old in _ours(folder):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint folder (named step-N, with meta.json), or None."""
    done = [p for p in _ours(folder) if (p / "meta.json").is_file()]
    return max(done, key=lambda p: int(p.name[len(PREFIX):]), default=None)


def read_meta(path: Path) -> dict[str, Any]:
    """meta.json of a checkpoint; UserError when damaged or when it names another step (a copy)."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict) or meta.get("step") != int(path.name[len(PREFIX):]):
        raise UserError(f"checkpoint {path} has a damaged meta.json or one from another step (a renamed copy?); "
                        f"delete {path.name} to resume from an earlier one, or start again with --overwrite")
    return meta


def load(path: Path, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint; a damaged or tampered one is a UserError, never an unpickled object."""
    try:
        tensors = load_file(str(path / "trainable.safetensors"), device=str(device))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # OSError, SafetensorError, RuntimeError, UnpicklingError (weights_only refusal)
        raise UserError(f"checkpoint {path} is unreadable ({type(e).__name__}); it changed after it was written: "
                        f"delete {path.name} to resume from an earlier one, or start again with --overwrite") from None
    return tensors, state
