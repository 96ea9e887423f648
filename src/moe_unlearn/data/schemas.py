"""Record schemas (the field names public benchmarks use) and their validation.

- text: {text}  (WMDP corpora, MUSE raw text)
- qa:   {question, answer, optional paraphrased_answer, optional perturbed_answer: list}  (TOFU)
- mc:   {question, choices: list, answer: int index}  (WMDP, MMLU)
- completion: {prompt, continuation}  (MUSE VerbMem: a passage's start and its true continuation)

Validation renames mapped fields to ours, keeps any extra fields, converts what CSV files
store as strings (a JSON list of choices, a digit or a letter for the answer) and raises a
UserError naming the file, line and field otherwise.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import Any, Callable

from moe_unlearn.errors import UserError
from moe_unlearn.registry import Registry


@dataclass(frozen=True)
class Field:
    name: str
    convert: Callable[[Any], Any]  # returns the value, or raises ValueError("must be ...")
    required: bool = True


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, got {type(v).__name__}")
    if not v.strip():
        raise ValueError("must not be empty")
    return _unicode(v)


def _unicode(v: str) -> str:
    """v, if it is valid Unicode text: JSON escapes can produce lone surrogates no tokenizer takes."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"holds invalid Unicode (a lone surrogate {v[e.start]!r} at character {e.start})") from None
    return v


def _text_list(v: Any) -> list[str]:
    if isinstance(v, str):  # CSV cells hold lists as JSON
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise ValueError("must be a list of strings (in CSV: a JSON list)") from None
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError(f"must be a non-empty list of strings, got {type(v).__name__}")
    out = []
    for item in v:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ValueError(f"must be a list of strings, has a {type(item).__name__}")
        out.append(_unicode(str(item)))
    return out


def _index(v: Any) -> int:
    if isinstance(v, str):
        s = v.strip()
        if s.isdecimal():
            return int(s)
        if len(s) == 1 and s.upper() in string.ascii_uppercase:
            return string.ascii_uppercase.index(s.upper())
        raise ValueError(f"must be an integer index (or a letter A, B, ...), got {v!r}")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be an integer index, got {type(v).__name__}")
    return v


SCHEMAS: Registry[tuple[Field, ...]] = Registry("record kind")
SCHEMAS.register("text")((Field("text", _text),))
SCHEMAS.register("qa")((
    Field("question", _text),
    Field("answer", _text),
    Field("paraphrased_answer", _text, required=False),
    Field("perturbed_answer", _text_list, required=False),
))
SCHEMAS.register("mc")((
    Field("question", _text),
    Field("choices", _text_list),
    Field("answer", _index),
))
SCHEMAS.register("completion")((
    Field("prompt", _text),
    Field("continuation", _text),
))


def validate_record(raw: Any, kind: str, fields: dict[str, str], where: str) -> dict[str, Any]:
    """One raw row -> a record with our field names. where: 'data.jsonl: line 3'."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected an object with fields, got {type(raw).__name__}")
    record = {k: v for k, v in raw.items() if k not in fields.values()}
    for f in SCHEMAS.get(kind):
        source = fields.get(f.name, f.name)
        label = f"'{source}'" if source == f.name else f"'{source}' (mapped to '{f.name}')"
        if source not in raw or raw[source] is None:
            if f.required:
                have = ", ".join(map(str, raw)) or "none"
                raise UserError(f"{where}: missing field {label} for kind '{kind}' (fields: {have}); "
                                f"map it with fields: {{{f.name}: <your field>}}")
            record.pop(f.name, None)
            continue
        try:
            record[f.name] = f.convert(raw[source])
        except ValueError as e:
            raise UserError(f"{where}: field {label} {e}") from None
    if kind == "mc" and not 0 <= record["answer"] < len(record["choices"]):
        raise UserError(f"{where}: field 'answer' index {record['answer']} is out of range for "
                        f"{len(record['choices'])} choices (answers count from 0)")
    return record
