"""load_records: every schema, every file format, field mapping, and every bad-data case."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moe_unlearn.data import load_records
from moe_unlearn.errors import UserError


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_text_qa_mc_schemas(tmp_path: Path) -> None:
    text = load_records(jsonl(tmp_path / "t.jsonl", [{"text": "a b", "extra": 1}]), kind="text")
    assert text == [{"text": "a b", "extra": 1}]
    qa = load_records(jsonl(tmp_path / "q.jsonl", [
        {"question": "Q?", "answer": "A", "paraphrased_answer": "An A", "perturbed_answer": ["B", "C"]},
        {"question": "Q2?", "answer": "A2"},
    ]), kind="qa")
    assert qa[0]["perturbed_answer"] == ["B", "C"] and "perturbed_answer" not in qa[1]
    mc = load_records(jsonl(tmp_path / "m.jsonl", [{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 3}]),
                      kind="mc")
    assert mc[0]["answer"] == 3 and mc[0]["choices"][3] == "d"


def test_field_mapping_renames_to_our_names(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "q.jsonl", [{"prompt": "Q?", "response": "A", "id": 7}])
    rec = load_records(path, kind="qa", fields={"question": "prompt", "answer": "response"})
    assert rec == [{"id": 7, "question": "Q?", "answer": "A"}]


def test_csv_lists_and_answer_letters(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('question,choices,answer\nQ1?,"[""a"", ""b"", ""c"", ""d""]",B\nQ2?,"[""w"", ""x""]",0\n')
    rec = load_records(path, kind="mc")
    assert [r["answer"] for r in rec] == [1, 0] and rec[0]["choices"] == ["a", "b", "c", "d"]


def test_parquet_and_json_list(tmp_path: Path) -> None:
    pq.write_table(pa.table({"question": ["Q?"], "choices": [["a", "b", "c", "d"]], "answer": [2]}),
                   tmp_path / "m.parquet")
    assert load_records(tmp_path / "m.parquet", kind="mc")[0]["answer"] == 2
    (tmp_path / "t.json").write_text(json.dumps([{"text": "x"}, {"text": "y"}]))
    assert [r["text"] for r in load_records(tmp_path / "t.json", kind="text")] == ["x", "y"]


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", [{"text": "a"}, "", {"text": "b"}])
    assert len(load_records(path, kind="text")) == 2


@pytest.mark.parametrize(
    ("kind", "rows", "fields", "expected"),
    [
        ("qa", [{"question": "Q?", "answer": "A"}, {"question": "Q?"}], None, r"line 2: missing field 'answer'"),
        ("qa", [{"q": "Q?", "answer": "A"}], {"question": "prompt"}, r"line 1: missing field 'prompt' \(mapped to 'question'\)"),
        ("qa", [{"question": "Q?", "answer": 5}], None, r"line 1: field 'answer' must be a string, got int"),
        ("qa", [{"question": " ", "answer": "A"}], None, r"field 'question' must not be empty"),
        ("qa", [{"question": "Q", "answer": "A", "perturbed_answer": "B"}], None, r"field 'perturbed_answer' must be a list"),
        ("text", [{"text": "ok"}, "{not json"], None, r"line 2: not valid JSON"),
        ("text", [[1, 2]], None, r"line 1: expected an object"),
        ("mc", [{"question": "Q", "choices": ["a", "b"], "answer": 2}], None, r"line 1: field 'answer' index 2 is out of range"),
        ("mc", [{"question": "Q", "choices": ["a", "b"], "answer": -1}], None, r"out of range"),
        ("mc", [{"question": "Q", "choices": ["a", "b"], "answer": 1.0}], None, r"field 'answer' must be an integer"),
        ("mc", [{"question": "Q", "choices": "a b", "answer": 0}], None, r"field 'choices' must be a list"),
        ("mc", [{"question": "Q", "choices": [], "answer": 0}], None, r"field 'choices' must be a non-empty list"),
        ("mc", [{"question": "Q", "choices": ["a", {"b": 1}], "answer": 0}], None, r"has a dict"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path: Path, kind: str, rows: list, fields, expected: str) -> None:
    path = jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError, match=expected) as e:
        load_records(path, kind=kind, fields=fields)
    assert str(path) in str(e.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data file not found"):
        load_records(tmp_path / "missing.jsonl", kind="text")
    empty = jsonl(tmp_path / "empty.jsonl", [""])
    with pytest.raises(UserError, match="no records; the data set is empty"):
        load_records(empty, kind="text")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="not readable as UTF-8"):
        load_records(binary, kind="text")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        load_records(broken, kind="text")
    other = tmp_path / "data.txt"
    other.write_text("hello")
    with pytest.raises(UserError, match="unknown file format '.txt'"):
        load_records(other, kind="text")
    with pytest.raises(UserError, match="unknown record kind 'qq'"):
        load_records(empty, kind="qq")
    csv_path = tmp_path / "q.csv"
    csv_path.write_text("question,answer\nQ?,\n")
    with pytest.raises(UserError, match=r"q.csv: line 2: missing field 'answer'"):
        load_records(csv_path, kind="qa")


def test_hub_name_offline_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):
        load_records("cais/wmdp:wmdp-bio", kind="mc")
