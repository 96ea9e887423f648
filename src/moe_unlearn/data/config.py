"""The `data:` section of an unlearning config, and loading it into an `UnlearnData`.

Either `manifest` (a built benchmark; "auto" = the embedded default benchmark, built or taken
from the cache by `moe_unlearn.benchmark.resolve_manifest`, which callers above the data layer
apply before `load_data`) or explicit sources:

    data:
      forget: {path: bio_forget.jsonl, kind: text}
      retain: {path: wikitext.parquet, kind: text, fields: {text: content}}
      utility_mc: {path: mmlu.csv, kind: mc}
      train_format: text

Public benchmarks evaluate on other sets than they train on: `eval` gives a split its own
evaluation sources (a list; records of one kind are concatenated), and the split's training
source then only trains. `select` keeps, in every source that has the field, the rows whose
value is listed (e.g. RWKU's `subject`); `text_chunking: chunk` trains on every
max_length-token piece of long texts instead of their start:

    data:
      forget: {path: "muse-bench/MUSE-Books:raw", split: forget, kind: text}
      eval:
        forget:
          - {path: "muse-bench/MUSE-Books:knowmem", split: forget_qa, kind: qa}
          - {path: "muse-bench/MUSE-Books:verbmem", split: forget, kind: completion, fields: {continuation: gt}}
      text_chunking: chunk

TOFU's model utility also reads its real-authors and world-facts QA sets (with perturbed
answers), as the optional sources `real_authors` and `world_facts` (evaluation only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from moe_unlearn.config import require
from moe_unlearn.errors import UserError
from moe_unlearn.data.sources import SourceConfig
from moe_unlearn.data.splits import EVAL_QA_SOURCES, PairedBatches, UnlearnData, encode_records
from moe_unlearn.data.tokenize import pad_id
from moe_unlearn.vocab import SPLITS


AUTO = "auto"  # data.manifest value naming the embedded default benchmark


@dataclass
class EvalSources:
    """Evaluation-only sources per split (data.eval); a split not listed is evaluated on its training source."""

    forget: list[SourceConfig] | None = None
    retain: list[SourceConfig] | None = None
    holdout: list[SourceConfig] | None = None

    def validate(self, where: str) -> None:
        for name in SPLITS:
            sources = getattr(self, name)
            require(sources is None or len(sources) > 0, f"'{where}.{name}' is an empty list; list sources or drop it")

    def by_split(self) -> dict[str, list[SourceConfig]]:
        return {name: getattr(self, name) for name in SPLITS if getattr(self, name)}


@dataclass
class DataConfig:
    manifest: str | None = None  # path to manifest.json (or its directory), or "auto"
    forget: SourceConfig | None = None
    retain: SourceConfig | None = None
    holdout: SourceConfig | None = None
    utility_mc: SourceConfig | None = None
    eval: EvalSources | None = None  # evaluation-only sources per split
    select: dict[str, list[str]] | None = None  # keep rows whose field value is listed, in every source with the field
    real_authors: SourceConfig | None = None  # TOFU's real-authors QA (evaluation only)
    world_facts: SourceConfig | None = None  # TOFU's world-facts QA (evaluation only)
    train_format: Literal["qa", "text"] = "qa"
    text_chunking: Literal["truncate", "chunk"] = "truncate"  # long training texts: keep the start, or every piece
    max_length: int = 64
    batch_size: int = 8
    retain_batch_size: int = 8
    eval_size: int | None = None  # cap on examples per evaluation set
    chat_template: bool = False

    def validate(self, where: str) -> None:
        w = f"{where}." if where else ""
        explicit = [n for n in (*SPLITS, "utility_mc", "eval", "select", *EVAL_QA_SOURCES)
                    if getattr(self, n) is not None]
        require(self.manifest is not None or self.forget is not None,
                f"set '{w}manifest' (a built benchmark, or auto) or '{w}forget' (a data file)")
        require(self.manifest is None or not explicit,
                f"'{w}manifest' and '{w}{explicit[0] if explicit else ''}' are both set; use one or the other")
        for name in ("forget", "retain"):
            src = getattr(self, name)
            require(src is None or src.kind == self.train_format,
                    f"'{w}{name}.kind' is '{getattr(src, 'kind', '')}' but '{w}train_format' is "
                    f"'{self.train_format}'; make them match")
        for name in EVAL_QA_SOURCES:
            src = getattr(self, name)
            require(src is None or src.kind == "qa", f"'{w}{name}.kind' must be 'qa' (questions with "
                    f"perturbed_answer), got '{getattr(src, 'kind', '')}'")
        require(self.max_length >= 8, f"'{w}max_length' must be at least 8, got {self.max_length}")
        require(self.batch_size >= 1, f"'{w}batch_size' must be at least 1, got {self.batch_size}")
        require(self.retain_batch_size >= 1, f"'{w}retain_batch_size' must be at least 1, got {self.retain_batch_size}")
        require(self.eval_size is None or self.eval_size >= 1, f"'{w}eval_size' must be at least 1 or null")


def load_data(cfg: DataConfig) -> UnlearnData:
    """Read (and validate) every record the config names."""
    cfg.validate("data")  # a config without a data section was never validated
    if cfg.manifest == AUTO:
        raise UserError("data.manifest 'auto' names the embedded benchmark: resolve it first with "
                        "moe_unlearn.benchmark.resolve_manifest(data_config)")
    if cfg.manifest is not None:
        return UnlearnData.from_manifest(cfg.manifest)
    assert cfg.forget is not None  # validate() guarantees it
    return UnlearnData.from_sources(forget=cfg.forget, retain=cfg.retain, holdout=cfg.holdout,
                                    utility_mc=cfg.utility_mc, eval=cfg.eval.by_split() if cfg.eval else None,
                                    select=cfg.select, real_authors=cfg.real_authors, world_facts=cfg.world_facts)


def paired_batches(cfg: DataConfig, data: UnlearnData, tokenizer: Any, *, seed: int,
                   processes: int = 1) -> PairedBatches:
    """Training pairs in cfg.train_format; retain is None when the retain set has no such records.

    Batch sizes are per process (as in accelerate and the HF Trainer): the pairs hold GLOBAL
    batches of batch_size x processes rows, which each process cuts into its own block.
    """
    fmt, chunk = cfg.train_format, cfg.text_chunking == "chunk"
    forget = encode_records(tokenizer, data.train_split("forget").get(fmt, "forget"), kind=fmt,
                            max_length=cfg.max_length, chat_template=cfg.chat_template, chunk=chunk)
    retain_records = getattr(data.train_split("retain"), fmt)
    retain = None if not retain_records else encode_records(
        tokenizer, retain_records, kind=fmt, max_length=cfg.max_length, chat_template=cfg.chat_template, chunk=chunk)
    if processes > 1:
        for name, examples, size in (("forget", forget, cfg.batch_size), ("retain", retain, cfg.retain_batch_size)):
            if examples is not None and len(examples) < size * processes:
                raise UserError(f"the {name} set has {len(examples)} examples, fewer than one global batch "
                                f"({size} per process x {processes} processes); lower data.batch_size")
    return PairedBatches(forget, retain, batch_size=cfg.batch_size * processes,
                         retain_batch_size=cfg.retain_batch_size * processes, seed=seed, pad_id=pad_id(tokenizer))
