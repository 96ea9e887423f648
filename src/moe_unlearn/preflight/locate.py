"""Where a model's files are before anything loads them: a directory on this machine (given, in
the Hugging Face cache, or the embedded benchmark's), or a hub id still to download."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from moe_unlearn.benchmark.cache import cache_root, entry_name
from moe_unlearn.data import DataConfig, load_manifest
from moe_unlearn.data.config import AUTO
from moe_unlearn.errors import UserError
from moe_unlearn.hub import is_hub_id
from moe_unlearn.models.loading import check_model_dir
from moe_unlearn.preflight.remote import Hub

INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class Located:
    """A model as found: `directory` holds its files (None: not on this machine yet); `hub_id` when
    it comes from the Hub; `problem` when the named thing cannot be a model at all."""

    name: str
    directory: Path | None = None
    hub_id: str | None = None
    where: str = ""  # "local directory", "Hugging Face cache", ...
    problem: str | None = None


def weights_problem(directory: Path) -> str | None:
    """What keeps a directory from loading as a model, in the loader's words where it has them
    (no folder, pickle-only weights), plus what only shows later in a load: no config.json, a
    weight file its index lists but the folder lacks. None when it would load."""
    try:
        check_model_dir(directory)
    except UserError as e:
        return str(e)
    if not (directory / "config.json").is_file():
        return f"model directory '{directory}' has no config.json"
    if not (directory / INDEX).is_file():
        return None
    try:
        shards = sorted(set(json.loads((directory / INDEX).read_text())["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"model directory '{directory}' has an unreadable {INDEX}"
    absent = [s for s in shards if not (directory / s).is_file()]
    more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
    return f"model directory '{directory}' lacks {absent[0]}{more}, listed in its {INDEX}" if absent else None


def embedded_manifest() -> Path:
    """Where `data.manifest: auto` (the default embedded benchmark) is cached once built."""
    return cache_root() / entry_name("default", 0, None, 1.0) / "manifest.json"


def _manifest_model(data: DataConfig) -> Located:
    """The model a data manifest names (model.path unset)."""
    if data.manifest is None:
        return Located("(none)", problem="set model.path: the data has no manifest naming a model")
    manifest = Path(data.manifest)
    if data.manifest == AUTO:
        manifest = embedded_manifest()
        if not manifest.is_file():
            return Located("the embedded benchmark's model", where="built on this machine on first use")
    try:
        model = load_manifest(manifest).model
    except UserError as e:
        return Located(str(manifest), problem=str(e))
    return Located(str(model), directory=model, where="the benchmark manifest's model, on this machine")


def locate(path: str | None, data: DataConfig) -> Located:
    """Where the model `path` names (None: the data manifest's) has its files."""
    if path is None:
        return _manifest_model(data)
    if not is_hub_id(path):
        local = Path(path)  # as typed, like every path the user gives
        if not local.exists():
            return Located(path, problem=f"model path '{path}' does not exist; give an existing directory or a hub id")
        return Located(path, directory=local, where="on this machine")
    config = Hub.cached_file(path, "config.json")
    if config is not None and weights_problem(config.parent) is None:
        return Located(path, directory=config.parent, hub_id=path, where="in the Hugging Face cache")
    return Located(path, hub_id=path)
