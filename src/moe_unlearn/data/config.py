"""The `data:` section of an unlearning config, and loading it into an `UnlearnData`.

Either `manifest` (a built benchmark; "auto" = the embedded default benchmark, built or taken
from the cache) or explicit sources:

    data:
      forget: {path: bio_forget.jsonl, kind: text}
      retain: {path: wikitext.parquet, kind: text, fields: {text: content}}
      utility_mc: {path: mmlu.csv, kind: mc}
      train_format: text

TOFU's model utility also reads its real-authors and world-facts QA sets (with perturbed
answers), as the optional sources `real_authors` and `world_facts` (evaluation only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from moe_unlearn.config import require
from moe_unlearn.data.sources import SourceConfig
from moe_unlearn.data.splits import EVAL_QA_SOURCES, PairedBatches, UnlearnData, encode_records
from moe_unlearn.data.tokenize import pad_id


@dataclass
class DataConfig:
    manifest: str | None = None  # path to manifest.json (or its directory), or "auto"
    forget: SourceConfig | None = None
    retain: SourceConfig | None = None
    holdout: SourceConfig | None = None
    utility_mc: SourceConfig | None = None
    real_authors: SourceConfig | None = None  # TOFU's real-authors QA (evaluation only)
    world_facts: SourceConfig | None = None  # TOFU's world-facts QA (evaluation only)
    train_format: Literal["qa", "text"] = "qa"
    max_length: int = 64
    batch_size: int = 8
    retain_batch_size: int = 8
    eval_size: int | None = None  # cap on examples per evaluation set
    chat_template: bool = False

    def validate(self, where: str) -> None:
        w = f"{where}." if where else ""
        explicit = [n for n in ("forget", "retain", "holdout", "utility_mc", *EVAL_QA_SOURCES)
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
    if cfg.manifest == "auto":
        from moe_unlearn.benchmark.cache import cached_benchmark  # lazy: benchmark sits above data

        return UnlearnData.from_manifest(cached_benchmark())
    if cfg.manifest is not None:
        return UnlearnData.from_manifest(cfg.manifest)
    assert cfg.forget is not None  # validate() guarantees it
    return UnlearnData.from_sources(forget=cfg.forget, retain=cfg.retain, holdout=cfg.holdout,
                                    utility_mc=cfg.utility_mc, real_authors=cfg.real_authors,
                                    world_facts=cfg.world_facts)


def paired_batches(cfg: DataConfig, data: UnlearnData, tokenizer: Any, *, seed: int) -> PairedBatches:
    """Training pairs in cfg.train_format; retain is None when the retain set has no such records."""
    fmt = cfg.train_format
    forget = encode_records(tokenizer, data.forget.get(fmt, "forget"), kind=fmt, max_length=cfg.max_length,
                            chat_template=cfg.chat_template)
    retain_records = getattr(data.retain, fmt)
    retain = None if not retain_records else encode_records(
        tokenizer, retain_records, kind=fmt, max_length=cfg.max_length, chat_template=cfg.chat_template)
    return PairedBatches(forget, retain, batch_size=cfg.batch_size, retain_batch_size=cfg.retain_batch_size,
                         seed=seed, pad_id=pad_id(tokenizer))
