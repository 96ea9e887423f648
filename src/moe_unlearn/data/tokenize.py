"""Tokenisation of QA, text and MC records into label-masked examples, and right-padded batches.

An encoded example is a dict with `input_ids` and `labels` (lists of ints; labels are -100
where no loss applies) and, once placed in a split, `index`. The model shifts labels itself.
"""

from __future__ import annotations

from typing import Any

import torch

from moe_unlearn.errors import UserError

IGNORE = -100
# A token spans at most this many characters in any tokenizer we know (runs of spaces are the
# longest), so the first N tokens of a text are those of its first N * CHARS_PER_TOKEN characters.
CHARS_PER_TOKEN = 32


def clip(text: str, max_tokens: int, *, keep: str = "head") -> str:
    """The part of text that can hold its first (keep="head") or last ("tail") max_tokens tokens:
    a multi-megabyte line is cut before the tokenizer sees it, so memory follows max_length."""
    n = max_tokens * CHARS_PER_TOKEN
    if len(text) <= n:
        return text
    return text[:n] if keep == "head" else text[-n:]


def _ids(tokenizer: Any, text: str, *, special: bool, max_tokens: int | None, keep: str = "head") -> list[int]:
    """Token ids of text, of which only max_tokens (None: all) from the kept end are used."""
    text = text if max_tokens is None else clip(text, max_tokens, keep=keep)
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _eos(tokenizer: Any) -> list[int]:
    return [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]


def encode_qa(tokenizer: Any, question: str, answer: str, *, max_length: int,
              chat_template: bool = False) -> dict[str, list[int]]:
    """Prompt + " answer" + EOS; labels only on the answer tokens and EOS.

    Too long: the answer keeps up to max_length - 1 tokens and the prompt is cut from the left
    (the words nearest the answer stay).
    """
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("the tokenizer has no chat template; set data.chat_template=false")
        prompt_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": clip(question, max_length, keep="tail")}], tokenize=False,
            add_generation_prompt=True,
        )
        prompt = _ids(tokenizer, prompt_text, special=False, max_tokens=2 * max_length, keep="tail")
        answer_ids = _ids(tokenizer, answer, special=False, max_tokens=max_length) + _eos(tokenizer)
    else:
        prompt = _ids(tokenizer, question, special=True, max_tokens=max_length, keep="tail")
        answer_ids = _ids(tokenizer, " " + answer, special=False, max_tokens=max_length) + _eos(tokenizer)
    answer_ids = answer_ids[: max(1, max_length - 1)]
    keep = max_length - len(answer_ids)
    prompt = prompt[-keep:] if keep > 0 else []
    return {"input_ids": prompt + answer_ids, "labels": [IGNORE] * len(prompt) + answer_ids}


def encode_text(tokenizer: Any, text: str, *, max_length: int) -> dict[str, list[int]]:
    """Text + EOS, truncated to max_length; labels on every token."""
    ids = (_ids(tokenizer, text, special=True, max_tokens=max_length) + _eos(tokenizer))[:max_length]
    return {"input_ids": ids, "labels": list(ids)}


def chunk_text(tokenizer: Any, text: str, *, max_length: int) -> list[dict[str, list[int]]]:
    """Text + EOS cut into consecutive pieces of max_length tokens; labels on every token (every
    token is used, so the whole text is tokenized: memory follows the text here, by design)."""
    ids = _ids(tokenizer, text, special=True, max_tokens=None) + _eos(tokenizer)
    return [{"input_ids": ids[i:i + max_length], "labels": ids[i:i + max_length]} for i in range(0, len(ids), max_length)]


def encode_mc(tokenizer: Any, record: dict, *, max_length: int) -> list[dict[str, list[int]]]:
    """One (question, choice) QA example per choice, for log-likelihood scoring."""
    return [encode_qa(tokenizer, record["question"], str(c), max_length=max_length)
            for c in record["choices"]]


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, falling back to EOS, then 0 (many causal LMs have no pad token)."""
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pid if pid is not None else 0)


def to_device(batch: dict[str, Any] | None, device: torch.device) -> dict[str, Any] | None:
    """Move a collated batch's tensors to device (other values pass through; no batch stays None,
    e.g. the retain batch of a run without retain records)."""
    if batch is None:
        return None
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def pad_columns(t: torch.Tensor, length: int, fill: int) -> torch.Tensor:
    """[B, S] right-padded with `fill` to [B, length] (as collate pads)."""
    return torch.nn.functional.pad(t, (0, length - t.shape[1]), value=fill) if t.shape[1] < length else t


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example.

    Returns input_ids [B, S], attention_mask [B, S], labels [B, S] (-100 on padding and
    prompt) and index [B] (each example's `index`, else its position in `examples`).
    """
    longest = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"], dtype=torch.long)
        labels[row, :n] = torch.tensor(e["labels"], dtype=torch.long)
        mask[row, :n] = 1
    index = torch.tensor([e.get("index", i) for i, e in enumerate(examples)], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "index": index}
