"""Forget / retain / holdout record sets, their encoding, and reproducible forget/retain pairing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from moe_unlearn.data.manifest import load_manifest
from moe_unlearn.data.sources import SourceConfig, load_records
from moe_unlearn.data.tokenize import chunk_text, collate, encode_qa, encode_text
from moe_unlearn.errors import UserError
from moe_unlearn.vocab import SPLITS


@dataclass
class Split:
    """Records of one split by kind; any kind may be None (not provided)."""

    qa: list[dict] | None = None
    text: list[dict] | None = None
    mc: list[dict] | None = None
    completion: list[dict] | None = None

    def head(self, n: int | None) -> Split:
        """The first n records of each kind (None: all)."""
        return Split(**{k: None if r is None else r[:n] for k, r in vars(self).items()})

    @classmethod
    def of(cls, sources: list[SourceConfig], select: dict[str, list[str]] | None = None) -> Split:
        """One split from several sources: records of the same kind are concatenated in order."""
        kinds: dict[str, list[dict]] = {}
        for src in sources:
            kinds.setdefault(src.kind, []).extend(src.load(select))
        return cls(**kinds)

    def get(self, kind: str, split_name: str) -> list[dict]:
        records = getattr(self, kind)
        if not records:
            raise UserError(f"the {split_name} set has no '{kind}' records; provide them or choose another format")
        return records


# optional QA sets read only by evaluation (TOFU's model utility), each with perturbed answers
EVAL_QA_SOURCES = ("real_authors", "world_facts")


@dataclass
class UnlearnData:
    """forget / retain / holdout are what evaluation reads; `train` holds the training records of
    a split when they differ from its evaluation records (data.eval), else training reads the split."""

    forget: Split
    retain: Split
    holdout: Split | None = None
    utility_mc: list[dict] | None = None
    model: Path | None = None  # the manifest's base model, when there is one
    manifest: Path | None = None
    train: dict[str, Split] = field(default_factory=dict)

    def train_split(self, name: str) -> Split:
        """The records to train on for split `name` ("forget" or "retain")."""
        return self.train.get(name) or getattr(self, name)

    def sizes(self) -> dict[str, dict[str, int]]:
        """{"train forget": {kind: n}, "forget": {...}, ...}: record counts of every non-empty set."""
        out: dict[str, dict[str, int]] = {}
        named = [(f"train {k}", v) for k, v in self.train.items()]
        named += [(k, getattr(self, k)) for k in SPLITS]
        for name, split in named:
            counts = {kind: len(r) for kind, r in vars(split or Split()).items() if r}
            if counts:
                out[name] = counts
        if self.utility_mc:
            out["utility"] = {"mc": len(self.utility_mc)}
        return out
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
                     eval: dict[str, list[SourceConfig]] | None = None,
                     select: dict[str, list[str]] | None = None,
                     real_authors: SourceConfig | None = None, world_facts: SourceConfig | None = None) -> UnlearnData:
        """One source per split (its kind says which list it fills); `eval` gives a split its own
        evaluation sources (the training source then only trains); `select` filters every source;
        real_authors / world_facts are TOFU's evaluation-only QA sets with perturbed answers."""

        def split(src: SourceConfig | None) -> Split:
            return Split() if src is None else Split.of([src], select)

        if utility_mc is not None and utility_mc.kind != "mc":
            raise UserError(f"utility_mc must be of kind 'mc', got '{utility_mc.kind}'")
        splits = {"forget": split(forget), "retain": split(retain), "holdout": None if holdout is None else split(holdout)}
        train = {}
        for name, sources in (eval or {}).items():
            if name in ("forget", "retain") and splits[name] is not None:
                train[name] = splits[name]
            splits[name] = Split.of(sources, select)
        extra = {name: _perturbed_qa(name, src, select) for name, src in
                 (("real_authors", real_authors), ("world_facts", world_facts)) if src is not None}
        data = cls(splits["forget"], splits["retain"], splits["holdout"],
                   None if utility_mc is None else utility_mc.load(select), train=train, **extra)
        _check_select(data, select)
        return data

    def capped(self, n: int | None) -> UnlearnData:
        """Every split cut to its first n records per kind (for evaluation)."""
        return replace(self, forget=self.forget.head(n), retain=self.retain.head(n),
                       holdout=None if self.holdout is None else self.holdout.head(n),
                       utility_mc=None if self.utility_mc is None else self.utility_mc[:n],
                       **{k: None if getattr(self, k) is None else getattr(self, k).head(n) for k in EVAL_QA_SOURCES})


def _perturbed_qa(name: str, src: SourceConfig, select: dict[str, list[str]] | None) -> Split:
    """A QA evaluation set whose every record has perturbed answers (TOFU's truth ratio needs them)."""
    if src.kind != "qa":
        raise UserError(f"{name} must be of kind 'qa', got '{src.kind}'")
    records = src.load(select)
    for n, r in enumerate(records, 1):
        if not r.get("perturbed_answer"):
            raise UserError(f"{src.path}: record {n}: field 'perturbed_answer' is missing; {name} records need "
                            "perturbed answers (TOFU's truth ratio and probability use them)")
    return Split(qa=records)


def _check_select(data: UnlearnData, select: dict[str, list[str]] | None) -> None:
    """Every data.select field must be a field of some source (a typo would filter nothing)."""
    splits = [*data.train.values(), data.forget, data.retain, data.holdout or Split()]
    lists = [r for s in splits for r in vars(s).values() if r] + [data.utility_mc or []]
    for name in select or {}:
        if not any(name in rec for records in lists for rec in records):
            raise UserError(f"data.select field '{name}' is a field of no data source; check its spelling")


def encode_records(tokenizer: Any, records: list[dict], *, kind: str, max_length: int,
                   chat_template: bool = False, chunk: bool = False) -> list[dict]:
    """QA or text records -> encoded examples carrying `index` (position in the returned list).

    chunk=True cuts each text into consecutive max_length-token pieces (every token of a long
    document is trained on, as MUSE does for its books) instead of keeping only its start.
    """
    if kind == "qa":
        out = [encode_qa(tokenizer, r["question"], r["answer"], max_length=max_length, chat_template=chat_template)
               for r in records]
    elif kind == "text" and chunk:
        out = [piece for r in records for piece in chunk_text(tokenizer, r["text"], max_length=max_length)]
    elif kind == "text":
        out = [encode_text(tokenizer, r["text"], max_length=max_length) for r in records]
    else:
        raise UserError(f"cannot train on '{kind}' records; use 'qa' or 'text'")
    return [{**e, "index": i} for i, e in enumerate(out)]


# the fields a training example is made of, per train format (encode_records)
TRAINED_FIELDS = {"qa": ("question", "answer"), "text": ("text",)}


def shared_records(forget: list[dict], retain: list[dict], kind: str) -> int:
    """How many forget records the retain set holds too, compared by what training reads of
    them (fields of their own, such as an id, do not make two records differ)."""
    fields = TRAINED_FIELDS[kind]
    retained = {tuple(r.get(f) for f in fields) for r in retain}
    return sum(tuple(r.get(f) for f in fields) in retained for r in forget)


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
