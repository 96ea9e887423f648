"""PairedBatches reproducibility, DataConfig validation, load_data and manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moe_unlearn.config import build
from moe_unlearn.data import DataConfig, PairedBatches, UnlearnData, load_data, load_manifest, paired_batches
from moe_unlearn.errors import UserError


def examples(n: int, offset: int = 0) -> list[dict]:
    return [{"input_ids": [offset + i + 1] * (1 + i % 3), "labels": [offset + i + 1] * (1 + i % 3), "index": i}
            for i in range(n)]


def test_pairing_is_a_pure_function_of_seed_and_step() -> None:
    pb = PairedBatches(examples(10), examples(30, 100), batch_size=4, retain_batch_size=8, seed=3)
    again = PairedBatches(examples(10), examples(30, 100), batch_size=4, retain_batch_size=8, seed=3)
    for step in (7, 0, 5, 7):  # any order: resuming at a step gives the same batch
        f1, r1 = pb.batch(step)
        f2, r2 = again.batch(step)
        assert torch.equal(f1["input_ids"], f2["input_ids"]) and torch.equal(r1["index"], r2["index"])
    assert f1["index"].shape == (4,) and r1["index"].shape == (8,)
    other = PairedBatches(examples(10), examples(30, 100), batch_size=4, retain_batch_size=8, seed=4)
    assert any(not torch.equal(pb.batch(s)[0]["index"], other.batch(s)[0]["index"]) for s in range(4))


def test_each_epoch_is_a_permutation_without_repeats() -> None:
    pb = PairedBatches(examples(12), None, batch_size=4, retain_batch_size=4, seed=0)
    epoch0 = torch.cat([pb.batch(s)[0]["index"] for s in range(3)])
    epoch1 = torch.cat([pb.batch(s)[0]["index"] for s in range(3, 6)])
    assert sorted(epoch0.tolist()) == list(range(12)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    assert pb.batch(0)[1] is None
    small = PairedBatches(examples(3), None, batch_size=8, retain_batch_size=8, seed=0)
    assert sorted(small.batch(5)[0]["index"].tolist()) == [0, 1, 2]
    with pytest.raises(UserError, match="forget set is empty"):
        PairedBatches([], None, batch_size=2, retain_batch_size=2, seed=0)


def test_data_config_validation() -> None:
    cfg = build(DataConfig, {"forget": {"path": "f.jsonl", "kind": "text"}, "train_format": "text"}, "data")
    assert cfg.forget is not None and cfg.forget.kind == "text"
    bad = [
        ({}, "set 'data.manifest'"),
        ({"manifest": "auto", "forget": {"path": "f.jsonl"}}, "both set"),
        ({"forget": {"path": "f.jsonl", "kind": "text"}}, "'data.forget.kind' is 'text' but 'data.train_format' is 'qa'"),
        ({"manifest": "m", "max_length": 2}, "max_length"),
        ({"manifest": "m", "batch_size": 0}, "batch_size"),
        ({"manifest": "m", "eval_size": 0}, "eval_size"),
        ({"manifest": "m", "train_format": "mc"}, "must be one of qa, text"),
        ({"forget": {"path": "f.jsonl", "fields": {"questoin": "q"}}}, "does not have"),
        ({"manifest": "m", "batchsize": 3}, "did you mean 'batch_size'"),
    ]
    for data, message in bad:
        with pytest.raises(UserError, match=message):
            build(DataConfig, data, "data")


def test_load_data_from_explicit_sources(tmp_path: Path) -> None:
    (tmp_path / "f.jsonl").write_text(json.dumps({"prompt": "Q?", "answer": "A"}) + "\n")
    (tmp_path / "u.jsonl").write_text(json.dumps({"question": "Q?", "choices": ["a", "b"], "answer": 1}) + "\n")
    cfg = build(DataConfig, {"forget": {"path": str(tmp_path / "f.jsonl"), "fields": {"question": "prompt"}},
                             "utility_mc": {"path": str(tmp_path / "u.jsonl"), "kind": "mc"}}, "data")
    data = load_data(cfg)
    assert data.forget.qa == [{"question": "Q?", "answer": "A"}]
    assert data.retain.qa is None and data.holdout is None and data.utility_mc[0]["answer"] == 1
    with pytest.raises(UserError, match="no 'text' records"):
        data.forget.get("text", "forget")


def test_manifest_resolves_relative_paths_and_reports_missing_files(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "f.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    manifest = {"model": "model", "forget": {"text": "f.jsonl"}, "retain": {"text": str(tmp_path / "f.jsonl")}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    m = load_manifest(tmp_path)
    assert m.model == tmp_path / "model" and m.splits["forget"]["text"] == tmp_path / "f.jsonl"
    assert m.splits["holdout"] == {} and m.utility_mc is None
    data = UnlearnData.from_manifest(tmp_path / "manifest.json")
    assert data.retain.text == [{"text": "x"}] and data.forget.qa is None
    manifest["retain"] = {"qa": "gone.jsonl"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"'retain.qa' points to .*gone.jsonl, which does not exist"):
        load_manifest(tmp_path / "manifest.json")
    with pytest.raises(UserError, match="manifest not found"):
        load_manifest(tmp_path / "nope.json")
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_manifest(tmp_path / "manifest.json")


def test_tiny_benchmark_pairs_qa_batches(tiny_benchmark: Path) -> None:
    from transformers import AutoTokenizer

    cfg = build(DataConfig, {"manifest": str(tiny_benchmark), "batch_size": 4, "retain_batch_size": 6}, "data")
    data = load_data(cfg)
    assert data.model is not None and data.holdout is not None and data.utility_mc
    tok = AutoTokenizer.from_pretrained(data.model)
    forget, retain = paired_batches(cfg, data, tok, seed=0).batch(2)
    assert forget["input_ids"].shape[0] == 4 and retain["input_ids"].shape[0] == 6
    # labels sit on the answer: decoding them gives the record's answer
    i = int(forget["index"][0])
    answer_ids = forget["labels"][0][forget["labels"][0] != -100].tolist()
    assert tok.decode(answer_ids, skip_special_tokens=True).strip() == data.forget.qa[i]["answer"]
    assert len(data.capped(3).retain.qa) == 3


def test_tofu_utility_sources_load_validate_and_need_perturbed_answers(tmp_path: Path) -> None:
    """data.real_authors / data.world_facts: optional QA sources (evaluation only), like data.holdout."""
    rows = [{"question": "Who wrote X?", "answer": "A", "perturbed_answer": ["B", "C"]}]
    for name in ("f", "ra", "wf"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "Q?", "answer": "A"}) + "\n")
    cfg = build(DataConfig, {"forget": {"path": str(tmp_path / "f.jsonl")},
                             "real_authors": {"path": str(tmp_path / "ra.jsonl")},
                             "world_facts": {"path": str(tmp_path / "wf.jsonl")}}, "data")
    data = load_data(cfg)
    assert data.real_authors.qa == rows and data.world_facts.qa == rows
    assert load_data(build(DataConfig, {"forget": {"path": str(tmp_path / "f.jsonl")}}, "data")).real_authors is None
    with pytest.raises(UserError, match="record 1: field 'perturbed_answer' is missing"):
        load_data(build(DataConfig, {"forget": {"path": str(tmp_path / "f.jsonl")},
                                     "world_facts": {"path": str(tmp_path / "bad.jsonl")}}, "data"))
    for data_cfg, message in [
        ({"forget": {"path": "f.jsonl"}, "real_authors": {"path": "ra.jsonl", "kind": "text"}}, "'data.real_authors.kind' must be 'qa'"),
        ({"manifest": "auto", "world_facts": {"path": "wf.jsonl"}}, "both set"),
    ]:
        with pytest.raises(UserError, match=message):
            build(DataConfig, data_cfg, "data")
