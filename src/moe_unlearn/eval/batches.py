"""Deterministic encoding and batching of eval sets (same order and batches on every call).

Routing replay and stability compare token by token, so the original model's capture and the
evaluated model's forwards MUST see identical batches: every pass goes through `make_batches`.
"""

from __future__ import annotations

from typing import Any

from moe_unlearn.data.tokenize import IGNORE, collate, encode_mc, encode_qa, encode_text
from moe_unlearn.eval.config import EvalConfig
from moe_unlearn.vocab import Batch


def qa_examples(tokenizer: Any, records: list[dict], cfg: EvalConfig, *, answer: str = "answer") -> list[dict]:
    """Encode (question, record[answer]) pairs; labels on answer tokens only."""
    return [
        encode_qa(tokenizer, r["question"], r[answer], max_length=cfg.max_length, chat_template=cfg.chat_template)
        for r in records
    ]


def text_examples(tokenizer: Any, records: list[dict], cfg: EvalConfig) -> list[dict]:
    """Encode raw texts; every token after the first is scored."""
    out = []
    for r in records:
        ex = dict(encode_text(tokenizer, r["text"], max_length=cfg.max_length))
        ex["labels"] = list(ex["input_ids"])
        out.append(ex)
    return out


def mc_examples(tokenizer: Any, records: list[dict], cfg: EvalConfig) -> tuple[list[dict], list[int]]:
    """Flatten every (question, choice) pair; returns the examples and each record's choice count."""
    examples: list[dict] = []
    sizes: list[int] = []
    for r in records:
        choices = encode_mc(tokenizer, r, max_length=cfg.max_length)
        examples += choices
        sizes.append(len(choices))
    return examples, sizes


def shared_prompt(choices: list[dict]) -> tuple[list[int], list[dict]] | None:
    """(prefix, tails) when every choice of one MC record has the same prompt of >= 2 tokens:
    prefix = the prompt less its last token, each tail = that token + the choice's answer
    (labels on the answer only), so prefix + tail is the choice's full example. None otherwise
    (e.g. a prompt cut differently per choice to fit max_length)."""
    prompts = [ex["input_ids"][: ex["labels"].count(IGNORE)] for ex in choices]
    if len(prompts[0]) < 2 or any(p != prompts[0] for p in prompts[1:]):
        return None
    n = len(prompts[0]) - 1
    tails = [{"input_ids": ex["input_ids"][n:], "labels": ex["labels"][n:]} for ex in choices]
    return prompts[0][:n], tails


def make_batches(examples: list[dict], batch_size: int, pad: int) -> list[Batch]:
    """Consecutive chunks of `batch_size` examples, collated with right padding."""
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = [dict(ex, index=start + i) for i, ex in enumerate(examples[start : start + batch_size])]
        out.append(collate(chunk, pad))
    return out

