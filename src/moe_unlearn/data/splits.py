"""Forget / retain / holdout record sets, their encoding, and reproducible forget/retain pairing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from moe_unlearn.data.manifest import load_manifest
from moe_unlearn.data.sources import SourceConfig, load_records
from moe_unlearn.data.tokenize import collate, encode_qa, encode_text
from moe_unlearn.errors import UserError


@dataclass
class Split:
    """Records of one split by kind; any kind may be None (not provided)."""

    qa: list[dict] | None = None
    text: list[dict] | None = None
    mc: list[dict] | None = None

    def head(self, n: int | None) -> Split:
        """The first n records of each kind (None: all)."""
        return Split(*(None if r is None else r[:n] for r in (self.qa, self.text, self.mc)))

    def get(self, kind: str, split_name: str) -> list[dict]:
        records = getattr(self, kind)
        if not records:
            raise UserError(f"the {split_name} set has no '{kind}' records; provide them or choose another format")
        return records


# optional QA sets read only by evaluation (TOFU's model utility), each with perturbed answers
EVAL_QA_SOURCES = ("real_authors", "world_facts")


@dataclass
class UnlearnData:
    forget: Split
    retain: Split
    holdout: Split | None = None
    utility_mc: list[dict] | None = None
    model: Path | None = None  # the manifest's base model, when there is one
    manifest: Path | None = None
    real_authors: Split | None = None  # TOFU's real-authors QA
    world_facts: Split | None = None  # TOFU's world-facts QA

    @classmethod
    def from_manifest(cls, path: str | Path) -> UnlearnData:
        m = load_manifest(path)

        def split(name: str) -> Split:
            files = m.splits[name]
            return Split(**{kind: load_records(p, kind=kind) for kind, p in files.items()})

        utility = None if m.utility_mc is None else load_records(m.utility_mc, kind="mc")
        return cls(split("forget"), split("retain"), split("holdout"), utility, model=m.model, manifest=m.path)

    @classmethod
    def from_sources(cls, *, forget: SourceConfig, retain: SourceConfig | None = None,
                     holdout: SourceConfig | None = None, utility_mc: SourceConfig | None = None,
                     real_authors: SourceConfig | None = None, world_facts: SourceConfig | None = None) -> UnlearnData:
        """One source per split (its kind says which list it fills)."""

        def split(src: SourceConfig | None) -> Split:
            return Split() if src is None else Split(**{src.kind: src.load()})

        if utility_mc is not None and utility_mc.kind != "mc":
            raise UserError(f"utility_mc must be of kind 'mc', got '{utility_mc.kind}'")
        extra = {name: _perturbed_qa(name, src) for name, src in
                 (("real_authors", real_authors), ("world_facts", world_facts)) if src is not None}
        return cls(split(forget), split(retain), None if holdout is None else split(holdout),
                   None if utility_mc is None else utility_mc.load(), **extra)

    def capped(self, n: int | None) -> UnlearnData:
        """Every split cut to its first n records per kind (for evaluation)."""
        return replace(self, forget=self.forget.head(n), retain=self.retain.head(n),
                       holdout=None if self.holdout is None else self.holdout.head(n),
                       utility_mc=None if self.utility_mc is None else self.utility_mc[:n],
                       **{k: None if getattr(self, k) is None else getattr(self, k).head(n) for k in EVAL_QA_SOURCES})


def _perturbed_qa(name: str, src: SourceConfig) -> Split:
    """A QA evaluation set whose every record has perturbed answers (TOFU's truth ratio needs them)."""
    if src.kind != "qa":
        raise UserError(f"{name} must be of kind 'qa', got '{src.kind}'")
    records = src.load()
    for n, r in enumerate(records, 1):
        if not r.get("perturbed_answer"):
            raise UserError(f"{src.path}: record {n}: field 'perturbed_answer' is missing; {name} records need "
                            "perturbed answers (TOFU's truth ratio and probability use them)")
    return Split(qa=records)


def encode_records(tokenizer: Any, records: list[dict], *, kind: str, max_length: int,
                   chat_template: bool = False) -> list[dict]:
    """QA or text records -> encoded examples carrying `index` (position in records)."""
    if kind == "qa":
        out = [encode_qa(tokenizer, r["question"], r["answer"], max_length=max_length, chat_template=chat_template)
               for r in records]
    elif kind == "text":
        out = [encode_text(tokenizer, r["text"], max_length=max_length) for r in records]
    else:
        raise UserError(f"cannot train on '{kind}' records; use 'qa' or 'text'")
    return [{**e, "index": i} for i, e in enumerate(out)]


class PairedBatches:
    """Pairs every forget batch with a retain batch; `batch(step)` is a pure function of (seed, step).

    Each stream walks epoch-wise permutations drawn from torch.Generator(seed-derived + epoch),
    dropping the last partial batch (a set smaller than the batch size is one whole batch), so
    resuming needs only the step.
    """

    def __init__(self, forget_examples: list[dict], retain_examples: list[dict] | None, *, batch_size: int,
                 retain_batch_size: int, seed: int, pad_id: int = 0) -> None:
        if not forget_examples:
            raise UserError("the forget set is empty; nothing to unlearn")
        self.forget, self.retain = forget_examples, retain_examples or None
        self.batch_size, self.retain_batch_size = batch_size, retain_batch_size
        self.seed, self.pad_id = seed, pad_id

    def _pick(self, examples: list[dict], size: int, stream: int, step: int) -> dict[str, torch.Tensor]:
        per_epoch = max(1, len(examples) // size)
        epoch, pos = divmod(step, per_epoch)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + stream * 10_007 + epoch)
        order = torch.randperm(len(examples), generator=gen)
        return collate([examples[i] for i in order[pos * size:(pos + 1) * size].tolist()], self.pad_id)

    def batch(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """(forget batch, retain batch or None) for this step; tensors on CPU."""
        forget = self._pick(self.forget, self.batch_size, 0, step)
        retain = None if self.retain is None else self._pick(self.retain, self.retain_batch_size, 1, step)
        return forget, retain
