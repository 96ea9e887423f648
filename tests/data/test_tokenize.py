"""encode_qa / encode_text / encode_mc label masks and truncation; collate's right padding."""

from __future__ import annotations

import pytest
import torch

from moe_unlearn.benchmark.base_model import train_tokenizer
from moe_unlearn.data import IGNORE, collate, encode_mc, encode_qa, encode_text
from moe_unlearn.errors import UserError


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["Which animal carries the virus? fruit bats", "The lungs are red."] * 20, 300)


def test_qa_labels_cover_answer_and_eos_only(tok) -> None:
    prompt = tok("Which animal carries the virus?", add_special_tokens=True)["input_ids"]
    e = encode_qa(tok, "Which animal carries the virus?", "fruit bats", max_length=64)
    answer = tok(" fruit bats", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert e["input_ids"] == prompt + answer
    assert e["labels"] == [IGNORE] * len(prompt) + answer


def test_qa_truncation_keeps_answer_and_cuts_prompt_from_left(tok) -> None:
    full = encode_qa(tok, "Which animal carries the virus?", "fruit bats", max_length=64)
    n_answer = sum(1 for x in full["labels"] if x != IGNORE)
    cut = encode_qa(tok, "Which animal carries the virus?", "fruit bats", max_length=n_answer + 2)
    assert len(cut["input_ids"]) == n_answer + 2
    assert cut["input_ids"] == full["input_ids"][-(n_answer + 2):]
    tiny = encode_qa(tok, "Which animal carries the virus?", "fruit bats", max_length=2)
    assert len(tiny["input_ids"]) == 2 and tiny["labels"][0] == IGNORE and tiny["labels"][1] != IGNORE


def test_text_labels_everything_and_truncates(tok) -> None:
    e = encode_text(tok, "The lungs are red.", max_length=64)
    assert e["labels"] == e["input_ids"] and e["input_ids"][-1] == tok.eos_token_id
    assert len(encode_text(tok, "The lungs are red.", max_length=3)["input_ids"]) == 3


def test_mc_gives_one_example_per_choice(tok) -> None:
    rec = {"question": "Which animal carries the virus?", "choices": ["fruit bats", "rats", "owls", "frogs"], "answer": 0}
    out = encode_mc(tok, rec, max_length=64)
    assert len(out) == 4
    assert out[2] == encode_qa(tok, rec["question"], "owls", max_length=64)


def test_collate_right_pads_and_masks(tok) -> None:
    a = {**encode_qa(tok, "Which animal carries the virus?", "fruit bats", max_length=64), "index": 5}
    b = {**encode_text(tok, "red", max_length=64), "index": 2}
    batch = collate([a, b], pad_id=tok.pad_token_id)
    n_a, n_b = len(a["input_ids"]), len(b["input_ids"])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, n_a)
    assert batch["attention_mask"][1].tolist() == [1] * n_b + [0] * (n_a - n_b)
    assert (batch["input_ids"][1, n_b:] == tok.pad_token_id).all()
    assert (batch["labels"][1, n_b:] == IGNORE).all()
    assert batch["index"].tolist() == [5, 2] and batch["index"].dtype == torch.long
    assert collate([b, b], 0)["index"].tolist() == [2, 2]


def test_chat_template_is_used_when_asked(tok) -> None:
    with pytest.raises(UserError, match="no chat template"):
        encode_qa(tok, "Q?", "A", max_length=64, chat_template=True)
    tok.chat_template = "{% for m in messages %}<user> {{ m['content'] }}{% endfor %} <bot>"
    try:
        e = encode_qa(tok, "Which animal?", "fruit bats", max_length=64, chat_template=True)
    finally:
        tok.chat_template = None
    prompt = tok("<user> Which animal? <bot>", add_special_tokens=False)["input_ids"]
    assert e["input_ids"][: len(prompt)] == prompt and e["labels"][: len(prompt)] == [IGNORE] * len(prompt)
    assert tok.decode([x for x in e["labels"] if x != IGNORE], skip_special_tokens=True) == "fruit bats"
