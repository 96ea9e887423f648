"""Hostile data files: CSV fields beyond the csv module's limit, invalid Unicode (lone
surrogates from JSON escapes), multi-megabyte lines, deep nesting, huge numbers, NULs.

Long texts are accepted and cut before tokenizing (the tokenizer never sees more than
max_length x CHARS_PER_TOKEN characters of one text, so its memory follows max_length, not the
line); text that no tokenizer can take is refused with file, line and field.
"""

from __future__ import annotations

import json

import pytest

import moe_unlearn.data.sources as sources
from moe_unlearn.data.tokenize import CHARS_PER_TOKEN


def qa_config(world, path, **data) -> dict:
    return {"method": "ga", "model": {"path": str(world.moe)},
            "data": {"forget": {"path": str(path), "kind": "qa"}, **data},
            "train": {"max_steps": 1, "checkpoint_every": 0}, "eval": {"metrics": ["nll"], "max_examples": 4}}


@pytest.mark.parametrize("name,phrase", [
    ("surrogate_text.jsonl", r"surrogate_text\.jsonl: line 2: field 'text' holds invalid Unicode \(a lone surrogate '\\ud800'"),
    ("deep.jsonl", r"deep\.jsonl: line 1: JSON nested too deeply"),
    ("deep.json", r"deep\.json: JSON nested too deeply"),
    ("bigint.jsonl", r"bigint\.jsonl: line 1: not valid JSON \(Exceeds the limit \(4300 digits\)"),
    ("inf_text.jsonl", r"inf_text\.jsonl: line 1: field 'text' must be a string, got float"),
    ("binary.csv", r"binary\.csv: not readable as UTF-8"),
    ("header_only.csv", r"header_only\.csv: no records"),
    ("empty.csv", r"empty\.csv: no records"),
])
def test_inspect_refuses_hostile_text(name, phrase, world, hostile, tmp_path, cli):
    cli(["inspect", world.moe, "--data", hostile.data / name, "--out", tmp_path / "s.json", "--quiet"],
        phrase=phrase, roots=[hostile.data])


@pytest.mark.parametrize("name,kind,phrase", [
    ("surrogate_qa.jsonl", "qa", r"line 1: field 'question' holds invalid Unicode \(a lone surrogate '\\udfff'"),
    ("surrogate_mc.jsonl", "mc", r"line 1: field 'choices' holds invalid Unicode"),
])
def test_unlearn_refuses_invalid_unicode_in_any_field(name, kind, phrase, world, hostile, tmp_path, cli):
    extra = {"utility_mc": {"path": str(hostile.data / name), "kind": "mc"}} if kind == "mc" else {}
    forget = hostile.data / name if kind == "qa" else world.root / "qa.jsonl"
    cfg = world.config(f"cfg-data-{name}.yaml", qa_config(world, forget, **extra))
    cli(["unlearn", cfg, "--out", tmp_path / "out", "--quiet"], phrase=phrase, roots=[hostile.data])


@pytest.mark.parametrize("value,phrase", [
    ("forget.jsonl\x00.txt", r"'data\.forget\.path' contains a NUL character"),
    ("forget-\udc80.jsonl", r"'data\.forget\.path' holds invalid Unicode"),
])
def test_config_strings_that_no_file_system_takes(value, phrase, world, tmp_path, cli):
    cfg = tmp_path / "cfg.yaml"
    raw = json.dumps(qa_config(world, "x"))  # JSON is YAML; its escapes carry the NUL / surrogate
    cfg.write_text(raw.replace('"x"', json.dumps(value)))
    cli(["unlearn", cfg, "--out", tmp_path / "out", "--quiet"], phrase=phrase)


def test_a_csv_field_beyond_the_csv_default_limit_is_read(world, hostile, tmp_path, cli):
    """Accepted: a 200 000-character CSV field (the csv module refuses above 131 072) is real data
    (a chapter, an article); the field limit is raised to 64 MiB for our reader only."""
    import csv

    default = csv.field_size_limit()
    out = tmp_path / "s.json"
    cli(["inspect", world.moe, "--data", hostile.data / "long_field.csv", "--out", out, "--quiet",
         "--max-length", "16"], code=0, writes=[out], roots=[hostile.data])
    assert json.loads(out.read_text())["tokens"] > 16  # both rows, the long one cut to 16 tokens
    assert csv.field_size_limit() == default  # restored


def test_a_csv_field_beyond_our_limit_is_one_line(world, hostile, tmp_path, cli, monkeypatch):
    monkeypatch.setattr(sources, "CSV_FIELD_LIMIT", 100_000)
    cli(["inspect", world.moe, "--data", hostile.data / "long_field.csv", "--out", tmp_path / "s.json", "--quiet"],
        phrase=r"long_field\.csv: line \d+: not valid CSV: field larger than field limit \(100000\) "
               r"\(an unclosed quote\?\)", roots=[hostile.data])


def test_nul_and_valid_surrogate_pairs_are_accepted(world, hostile, tmp_path, cli):
    """Accepted: a NUL inside a CSV text and a JSON surrogate PAIR (an emoji) are valid Unicode."""
    for name in ("nul.csv", "emoji.jsonl"):
        out = tmp_path / f"{name}.json"
        cli(["inspect", world.moe, "--data", hostile.data / name, "--out", out, "--quiet"], code=0, writes=[out],
            roots=[hostile.data])


@pytest.fixture
def tokenizer_spy(monkeypatch):
    """Record the length of every text handed to a tokenizer's __call__."""
    from transformers import PreTrainedTokenizerBase

    seen: list[int] = []
    real = PreTrainedTokenizerBase.__call__

    def spy(self, text=None, *args, **kwargs):
        for t in [text] if isinstance(text, str) else (text or []):
            seen.append(len(t))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", spy)
    return seen


def test_a_multi_megabyte_line_is_cut_before_tokenizing_in_inspect(world, hostile, tmp_path, cli, tokenizer_spy):
    out = tmp_path / "s.json"
    cli(["inspect", world.moe, "--data", hostile.data / "huge_line.jsonl", "--out", out, "--quiet",
         "--max-length", "64"], code=0, writes=[out], roots=[hostile.data])
    assert json.loads(out.read_text())["tokens"] == 64
    assert tokenizer_spy and max(tokenizer_spy) <= 64 * CHARS_PER_TOKEN  # of a 4 MiB line


def test_a_multi_megabyte_question_is_cut_before_tokenizing_in_unlearn(world, hostile, tmp_path, cli, tokenizer_spy):
    """Training and evaluation both see the 2 MiB question cut to data/eval.max_length tokens'
    worth of characters (the end of it: the words nearest the answer)."""
    cfg = world.config("cfg-huge-question.yaml", qa_config(world, hostile.data / "huge_question.jsonl", max_length=32))
    out = tmp_path / "out"
    cli(["unlearn", cfg, "eval.max_length=48", "--out", out, "--quiet"], code=0, writes=[out], roots=[hostile.data])
    assert max(tokenizer_spy) <= 2 * 48 * CHARS_PER_TOKEN
    assert json.loads((out / "metrics.json").read_text())["steps"] == 1
