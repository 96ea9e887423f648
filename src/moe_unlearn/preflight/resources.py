"""What a job reads and writes (`Job`), where each piece stands (`Resource`), and the registry of
checkers that find them: one checker per kind of resource (model, tokenizer, data, lm-eval
tasks, output), each in its own module of `preflight.checks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from moe_unlearn.data import DataConfig
from moe_unlearn.eval.config import EvalConfig
from moe_unlearn.preflight.remote import Hub
from moe_unlearn.registry import Registry

Status = Literal["local", "download", "missing"]


@dataclass(frozen=True)
class ModelRef:
    """A model the job loads: a local directory or hub id (None: the data manifest's model), and
    the config key or option that names it."""

    path: str | None
    key: str


@dataclass(frozen=True)
class Job:
    """Everything a command will read and write, before it reads any of it."""

    models: tuple[ModelRef, ...]
    data: DataConfig
    eval: EvalConfig | None = None
    out: Path | None = None  # the directory (or, with out_is_file, the file) the command writes
    out_key: str = "--out"
    out_is_file: bool = False
    chat_template_key: str | None = None  # the key that asks for the tokenizer's chat template, when one does


@dataclass(frozen=True)
class Resource:
    """One thing a job needs and where it stands here: local (on disk or in the cache), download
    (reachable, not here yet), or missing (with why and the key that points at a local copy)."""

    what: str  # e.g. "model 'Qwen/Qwen1.5-MoE-A2.7B' (config and weights)"
    status: Status
    keys: tuple[str, ...] = ()  # the config keys or options that name it
    detail: str = ""  # where it is (local), or why it cannot be had (missing)
    fix: str = ""  # what to change when it is missing
    size: int | None = None  # bytes to download, when known

    def line(self) -> str:
        """One line: what, why, and what to set."""
        return "; ".join(part for part in (f"{self.what}: {self.detail}" if self.detail else self.what, self.fix) if part)


Checker = Callable[[Job, Hub], list[Resource]]
CHECKERS: Registry[Checker] = Registry("resource checker", package="moe_unlearn.preflight.checks")


@dataclass
class Resolution:
    """Every resource of a job, and whether the Hub was asked for and found offline."""

    resources: list[Resource] = field(default_factory=list)
    offline: str | None = None

    @property
    def missing(self) -> list[Resource]:
        return [r for r in self.resources if r.status == "missing"]

    @property
    def downloads(self) -> list[Resource]:
        return [r for r in self.resources if r.status == "download"]


def resolve(job: Job) -> Resolution:
    """Run every registered checker on the job; nothing is loaded or written."""
    hub = Hub()
    found = [r for name in CHECKERS.names() for r in CHECKERS.get(name)(job, hub)]
    return Resolution(found, hub.asked_offline)
