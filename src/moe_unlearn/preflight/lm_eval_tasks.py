"""Which datasets an lm-evaluation-harness task reads, from the installed task YAMLs, without
importing lm_eval (its task registry indexes thousands of YAMLs in tens of seconds).

A name is a task (`task: NAME` with its `dataset_path` / `dataset_name`, after `include:`), a
group (`group: NAME` with a `task:` list of names or inline configs), or a tag (`tag: NAME`, or
the older `group: NAME` on a task). Folders given with lm_eval.include_path come first, as
their tasks replace built-in ones of the same name.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from moe_unlearn.config import parse_yaml

MAX_INCLUDES = 10  # include chains in lm-eval are one or two deep
FUNCTION_TAG = re.compile(r"!function\s+[^\s,\]}]+")


@dataclass(frozen=True)
class TaskData:
    """One dataset a task loads: `path` is a hub id, a local folder, or a builder (json, csv, ...)
    with `files`; `name` is the dataset config."""

    path: str
    name: str | None = None
    files: tuple[str, ...] = ()


def installed_tasks_dir() -> Path | None:
    """lm_eval/tasks of the installed lm-evaluation-harness, found without importing it."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tasks"
    return folder if folder.is_dir() else None


def _read(path: Path) -> dict[str, Any] | None:
    """A task YAML as a mapping (None when the strict reader refuses it, e.g. a key given twice).
    lm-eval tags Python hooks (`process_docs: !function utils.process_docs`); they read as null."""
    try:
        loaded = parse_yaml(FUNCTION_TAG.sub("null", path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else {}


def _with_includes(config: dict[str, Any], folder: Path, depth: int = 0) -> dict[str, Any]:
    """The config merged over what it includes (its own keys win), as lm-eval reads it."""
    include = config.get("include")
    if not isinstance(include, str) or depth > MAX_INCLUDES:
        return config
    target = Path(include) if Path(include).is_absolute() else folder / include
    base = _with_includes(_read(target) or {}, target.parent, depth + 1)
    return {**base, **{k: v for k, v in config.items() if k != "include"}}


def _tags(config: dict[str, Any]) -> list[str]:
    tags = config.get("tag") or []
    tags = [tags] if isinstance(tags, str) else list(tags) if isinstance(tags, list) else []
    if isinstance(config.get("group"), str) and isinstance(config.get("task"), str):
        tags.append(config["group"])  # lm-eval < 0.4.3: `group` on a task meant a tag
    return [t for t in tags if isinstance(t, str)]


def _task_data(config: dict[str, Any]) -> TaskData | None:
    path = config.get("dataset_path")
    if not isinstance(path, str):
        return None  # a task class of its own (`class: !function ...`): its data is not declared
    kwargs = config.get("dataset_kwargs") if isinstance(config.get("dataset_kwargs"), dict) else {}
    files = kwargs.get("data_files") or ()
    if isinstance(files, dict):
        files = [f for v in files.values() for f in ([v] if isinstance(v, str) else v or [])]
    name = config.get("dataset_name")
    return TaskData(path, name if isinstance(name, str) else None, tuple([files] if isinstance(files, str) else files))


class TaskIndex:
    """The task YAMLs of some folders, read as text once and parsed only where a name appears."""

    def __init__(self, folders: list[Path]) -> None:
        self.layers = [{p: p.read_text(encoding="utf-8", errors="ignore") for p in sorted(f.rglob("*.yaml"))}
                       for f in folders]

    def _definitions(self, name: str) -> list[tuple[Path, dict[str, Any]]]:
        """(file, config) of the files that define or tag `name`, from the first folder that has any."""
        word = re.compile(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])")
        for texts in self.layers:
            found = []
            for path, text in texts.items():
                if name not in text or not word.search(text):
                    continue
                read = _read(path)
                if read is None:  # defined where we cannot read it: a known name whose data stays unknown
                    if re.search(rf"^\s*[\"']?(task|group|tag)[\"']?\s*:.*{word.pattern}", text, re.MULTILINE):
                        found.append((path, {}))
                    continue
                config = _with_includes(read, path.parent)
                if config.get("task") == name or config.get("group") == name or name in _tags(config):
                    found.append((path, config))
            if found:
                return found
        return []

    def datasets(self, name: str, _seen: frozenset[str] = frozenset()) -> list[TaskData] | None:
        """Every dataset task/group/tag `name` reads (None: no such name; [] when none is declared)."""
        if name in _seen:
            return []
        seen = _seen | {name}
        found = self._definitions(name)
        if not found:
            return None
        out: list[TaskData] = []
        for path, config in found:
            members = config.get("task")
            if config.get("group") == name and isinstance(members, list):
                for member in members:
                    out += self._member(member, path.parent, seen)
            else:
                data = _task_data(config)
                out += [data] if data is not None else []
        return list(dict.fromkeys(out))

    def _member(self, member: Any, folder: Path, seen: frozenset[str]) -> list[TaskData]:
        """A group's entry: a name, or an inline config (which may override a named task's keys)."""
        if isinstance(member, str):
            return self.datasets(member, seen) or []
        if not isinstance(member, dict):
            return []
        config = _with_includes(member, folder)
        if "dataset_path" in config or not isinstance(config.get("task"), str):
            data = _task_data(config)
            return [data] if data is not None else []
        return self.datasets(config["task"], seen) or []
