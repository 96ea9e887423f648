"""The benchmark recipes' data, loaded offline through the real `datasets` path from hand-written
fixture copies of each hub repository (tests/fixtures/hub: same configs, splits, field names and
list-valued fields as the real data), plus the row transforms, data.select and text chunking."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bench.fixtures import FIXTURES, to_fixtures
from benchmark_recipes import RECIPES_DIR, without_pending

from moe_unlearn.config import build, resolve_yaml
from moe_unlearn.data import DataConfig, SourceConfig, load_data, load_records
from moe_unlearn.data.formats import RWKU_ANSWER, RWKU_FILL, mc_to_qa, rwku_probe, select_rows
from moe_unlearn.data.splits import encode_records
from moe_unlearn.errors import UserError
from moe_unlearn.models import tiny_tokenizer


def recipe_data(name: str):
    raw, _, _ = without_pending(to_fixtures(resolve_yaml(RECIPES_DIR / f"{name}.yaml")))
    return load_data(build(DataConfig, raw["data"], "data"))


@pytest.mark.parametrize("name, n_forget", [("wmdp_bio", 3), ("wmdp_cyber", 2)])
def test_wmdp_recipes_load_corpora_and_questions(name: str, n_forget: int) -> None:
    data = recipe_data(name)
    assert data.train_split("forget").text and data.train_split("retain").text  # corpora train
    mc, qa = data.forget.mc, data.forget.qa  # the WMDP questions evaluate, as MC and as QA
    assert len(mc) == len(qa) == n_forget and data.forget.text is None
    for m, q in zip(mc, qa):
        assert len(m["choices"]) == 4 and q["answer"] == m["choices"][m["answer"]] and q["question"] == m["question"]
    assert data.retain.mc[0]["subject"] == "elementary_mathematics" and data.retain.qa[0]["answer"] == "4"  # MMLU


@pytest.mark.parametrize("corpus", ["books", "news"])
def test_muse_recipes_load_the_four_criteria_sets(corpus: str) -> None:
    data = recipe_data(f"muse_{corpus}")
    assert len(data.train_split("forget").text) == 2 and len(data.train_split("retain").text) == 2  # raw forget / retain1
    f = data.forget
    assert f.qa[0]["answer"] == "In the tower of Brannock"  # KnowMem forget
    assert f.completion[0]["prompt"].endswith("tower of") and f.completion[0]["continuation"].startswith("Brannock")  # VerbMem (gt)
    assert all("privleak member" in r["text"] for r in f.text)  # PrivLeak members
    assert [r["answer"] for r in data.retain.qa] == ["Nets", "At dawn"]  # KnowMem retain
    assert all("non-member" in r["text"] for r in data.holdout.text)


@pytest.mark.parametrize("n, retain", [("01", "99"), ("05", "95"), ("10", "90")])
def test_tofu_recipes_load_perturbed_sets(n: str, retain: str) -> None:
    data = recipe_data(f"tofu_forget{n}")
    assert len(data.train_split("forget").qa) == 2 and len(data.train_split("retain").qa) == 3
    for rec in data.forget.qa + data.retain.qa:  # truth ratio needs both, list-valued perturbed answers
        assert isinstance(rec["paraphrased_answer"], str) and len(rec["perturbed_answer"]) == 5
    assert len(data.holdout.qa) == 2


def test_tofu_real_authors_and_world_facts_sources_load() -> None:
    """Issue 15's data keys: the recipe's sources load (the answer is the truth ratio's base)."""
    raw = to_fixtures(resolve_yaml(RECIPES_DIR / "tofu_forget10.yaml"))["data"]
    for key, n in (("real_authors", 2), ("world_facts", 1)):
        src = build(SourceConfig, raw[key], f"data.{key}")
        recs = src.load()
        assert len(recs) == n and all(r["paraphrased_answer"] == r["answer"] and len(r["perturbed_answer"]) == 3 for r in recs)


def test_rwku_recipe_selects_the_target_and_groups_probes() -> None:
    data = recipe_data("rwku")
    train = data.train_split("forget").text
    assert len(train) == 2 and all(r["subject"] == "Stephen King" for r in train)
    qa = data.forget.qa
    assert [r["group"] for r in qa] == ["FB", "QA", "AA", "AA"]
    assert qa[0]["question"] == RWKU_FILL.format(query="Stephen King's first published novel was ___.")
    assert qa[1]["question"] == RWKU_ANSWER.format(query="In which US state does Stephen King live?")
    assert qa[3]["question"].startswith("Please briefly answer the following question.\nQuestion: Who wrote Hamlet?")
    assert [r["group"] for r in data.retain.qa] == ["FB", "QA"]  # neighbor probes of the target only
    assert len(data.forget.text) == 1 and len(data.retain.text) == 2  # MIA: forget filtered, retain shared
    assert [r["answer"] for r in data.utility_mc] == [1]  # RWKU's MMLU subset of the target


def test_rwku_batch_setting_is_one_override() -> None:
    raw, _, _ = without_pending(to_fixtures(resolve_yaml(RECIPES_DIR / "rwku.yaml")))
    raw["data"]["select"] = {"subject": ["Stephen King", "Confucius"]}
    data = load_data(build(DataConfig, raw["data"], "data"))
    assert len(data.train_split("forget").text) == 3 and len(data.forget.qa) == 5


def test_schema_drift_fails_with_the_field_named(tmp_path: Path) -> None:
    """A renamed field in a copy of the WMDP fixture (choices -> options) is a one-line error."""
    repo = tmp_path / "wmdp"
    shutil.copytree(FIXTURES / "cais" / "wmdp", repo)
    f = repo / "wmdp-cyber" / "test-00000-of-00001.jsonl"
    f.write_text(f.read_text().replace('"choices"', '"options"'))
    with pytest.raises(UserError, match=r"missing field 'choices'"):
        load_records(f"{repo}:wmdp-cyber", kind="mc", split="test")
    with pytest.raises(UserError, match=r"needs 'choices'"):
        load_records(f"{repo}:wmdp-cyber", kind="qa", split="test", transform="mc_to_qa")


def test_gated_corpus_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = resolve_yaml(RECIPES_DIR / "wmdp_bio.yaml")
    src = build(SourceConfig, raw["data"]["forget"], "data.forget")
    with pytest.raises(UserError) as e:
        src.load()
    msg = str(e.value)
    assert "cais/wmdp-bio-forget-corpus" in msg and "gated" in msg and "data.forget.path=" in msg and "\n" not in msg


def test_transforms() -> None:
    assert mc_to_qa({"question": "Q", "choices": ["a", "b"], "answer": 1}) == {
        "question": "Q", "choices": ["a", "b"], "answer": "b", "answer_index": 1}
    with pytest.raises(ValueError, match="out of range"):
        mc_to_qa({"question": "Q", "choices": ["a"], "answer": 3})
    fb = rwku_probe({"query": "X is ___.", "answer": "y", "level": "1", "type": "fill"})
    assert fb["question"].startswith("Please complete the blank") and fb["answer"] == "y"
    with pytest.raises(ValueError, match="query"):
        rwku_probe({"answer": "y", "level": "2"})


def test_select_rows_filters_only_sources_with_the_field() -> None:
    rows = [("r1", {"s": "a", "t": 1}), ("r2", {"s": "b", "t": 2})]
    assert [loc for loc, _ in select_rows(rows, {"s": ["b"]})] == ["r2"]
    assert select_rows(rows, {"other": ["x"]}) == rows
    assert select_rows(rows, None) == rows


def test_select_typo_and_empty_selection_are_user_errors(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "a", "subject": "A"}\n{"text": "b", "subject": "B"}\n')
    base = {"forget": {"path": str(f), "kind": "text"}, "train_format": "text"}
    assert len(load_data(build(DataConfig, {**base, "select": {"subject": ["B"]}}, "data")).forget.text) == 1
    with pytest.raises(UserError, match="data.select field 'subjct' is a field of no data source"):
        load_data(build(DataConfig, {**base, "select": {"subjct": ["B"]}}, "data"))
    with pytest.raises(UserError, match=r"no record matches data.select \(subject in \['C'\]\)"):
        load_data(build(DataConfig, {**base, "select": {"subject": ["C"]}}, "data"))
    with pytest.raises(UserError, match="'data.eval.forget' is an empty list"):
        build(DataConfig, {**base, "eval": {"forget": []}}, "data")
    with pytest.raises(UserError, match="unknown data transform"):
        build(DataConfig, {**base, "eval": {"forget": [{"path": str(f), "kind": "qa", "transform": "mc2qa"}]}}, "data")


def test_text_chunking_trains_on_every_piece() -> None:
    tok = tiny_tokenizer()
    text = " ".join(f"w{i}" for i in range(200))
    whole = tok(text, add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
    pieces = encode_records(tok, [{"text": text}, {"text": "short"}], kind="text", max_length=16, chunk=True)
    first = pieces[: -(-len(whole) // 16)]
    assert [t for p in first for t in p["input_ids"]] == whole  # every token, in order, once
    assert all(len(p["input_ids"]) <= 16 and p["labels"] == p["input_ids"] for p in pieces)
    assert [p["index"] for p in pieces] == list(range(len(pieces)))
    truncated = encode_records(tok, [{"text": text}], kind="text", max_length=16)
    assert len(truncated) == 1 and truncated[0]["input_ids"] == whole[:16]
