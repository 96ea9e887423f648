"""The built tiny benchmark: manifest, knowledge, reproducibility, atomic cache, CLI."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from moe_unlearn.benchmark import build as build_mod
from moe_unlearn.benchmark import build_benchmark, cached_benchmark
from moe_unlearn.benchmark.base_model import kernels
from moe_unlearn.benchmark.cache import entry_name
from moe_unlearn.cli.main import run
from moe_unlearn.data import UnlearnData, collate, encode_qa, load_manifest
from moe_unlearn.errors import UserError
from moe_unlearn.eval import EvalConfig, EvalContext

MANIFEST_KEYS = {"model", "forget", "retain", "holdout", "utility_mc", "seed", "forget_domain", "forget_fraction",
                 "preset", "domains", "base_model_report"}


def load(manifest: Path):
    m = load_manifest(manifest)
    return AutoModelForCausalLM.from_pretrained(m.model).eval(), AutoTokenizer.from_pretrained(m.model)


def test_manifest_layout(tiny_benchmark: Path) -> None:
    raw = json.loads(tiny_benchmark.read_text())
    assert MANIFEST_KEYS <= set(raw)
    assert raw["model"] == "model" and raw["forget"] == {"text": "forget/text.jsonl", "qa": "forget/qa.jsonl",
                                                         "mc": "forget/mc.jsonl"}
    assert raw["seed"] == 0 and raw["forget_domain"] == "pathogens" and raw["forget_fraction"] == 1.0
    assert raw["preset"] == "tiny" and len(raw["domains"]) >= 5
    report = raw["base_model_report"]
    assert len(report["expert_load_ratio_by_layer"]) == 4 and report["build_seconds"] > 0
    assert (tiny_benchmark.parent / "model" / "model.safetensors").is_file()
    assert not list((tiny_benchmark.parent / "model").glob("*.bin"))


def test_tiny_model_knows_its_facts_and_not_the_holdout(tiny_benchmark: Path) -> None:
    model, tok = load(tiny_benchmark)
    data = UnlearnData.from_manifest(tiny_benchmark)
    assert sum(1 for _ in model.modules() if type(_).__name__.endswith("SparseMoeBlock")) >= 4
    assert model.config.num_experts >= 8
    ctx = EvalContext(model, tok, replace(data, retain=data.retain.head(80)),
                      EvalConfig(metrics=["exact_match", "mc_acc"], batch_size=64, max_examples=None, max_length=48))
    forget, retain, holdout = (ctx.result("exact_match", s).value for s in ("forget", "retain", "holdout"))
    assert forget >= 0.8 and retain >= 0.8 and holdout <= 0.4
    assert ctx.result("mc_acc", "forget").value >= 0.8


def test_gradient_ascent_visibly_raises_forget_nll(tiny_benchmark: Path) -> None:
    model, tok = load(tiny_benchmark)
    data = UnlearnData.from_manifest(tiny_benchmark)
    batch = collate([encode_qa(tok, r["question"], r["answer"], max_length=48) for r in data.forget.qa], tok.pad_token_id)

    def nll() -> float:
        with torch.no_grad():
            return float(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               labels=batch["labels"]).loss)

    before = nll()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(5):
        loss = -model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert before < 0.5 and nll() > before + 1.0


def test_same_seed_rebuild_is_identical(tiny_benchmark: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    again = build_benchmark(tmp_path / "again", preset="tiny", seed=0, progress=False)
    # the build named the CPU for DeepSpeed before saving imported it (it prints a warning otherwise)
    assert os.environ.get("DS_ACCELERATOR") == (None if torch.cuda.is_available() else "cpu")
    a, b = tiny_benchmark.parent, again.parent
    for rel in ["utility_mc.jsonl"] + [f"{s}/{k}.jsonl" for s in ("forget", "retain", "holdout") for k in ("text", "qa", "mc")]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    ta, tb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert (a / "model" / "tokenizer.json").read_bytes() == (b / "model" / "tokenizer.json").read_bytes()
    ra, rb = (json.loads(p.read_text())["base_model_report"] for p in (tiny_benchmark, again))
    assert ra["expert_load_ratio_by_layer"] == rb["expert_load_ratio_by_layer"]
    # what decides its last bits besides the config is on record (the cache keeps the first build)
    assert rb["kernels"] == kernels() and rb["torch_threads"] == torch.get_num_threads()


def test_cache_key_depends_on_every_build_argument() -> None:
    names = {entry_name("tiny", 0, None, 1.0), entry_name("tiny", 1, None, 1.0), entry_name("tiny", 0, "music", 1.0),
             entry_name("tiny", 0, None, 0.5), entry_name("default", 0, None, 1.0)}
    assert len(names) == 5 and entry_name("tiny", 0, None, 1.0) == entry_name("tiny", 0, "pathogens", 1.0)


@pytest.fixture
def fake_training(tiny_benchmark: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Builds that reuse the tiny model instead of training; counts calls; a private cache."""
    calls: list[int] = []

    def fake(bench, m, t, *, seed, progress=True):
        calls.append(seed)
        model, tok = load(tiny_benchmark)
        return model, tok, {"forget_answer_exact": 1.0, "retain_answer_exact": 1.0, "forget_mc_acc": 1.0,
                            "retain_mc_acc": 1.0, "max_expert_load_ratio": 2.5}

    monkeypatch.setattr(build_mod, "build_base_model", fake)
    monkeypatch.setenv("MOE_UNLEARN_CACHE", str(tmp_path / "cache"))
    return calls


def test_interrupted_build_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_mod, "build_base_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_benchmark(tmp_path / "out", preset="tiny", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_dirs_are_ignored_and_removed(fake_training, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    name = entry_name("tiny", 5, None, 1.0)
    stale = root / f".{name}.tmp-999-deadbeef"
    (stale / "forget").mkdir(parents=True)
    (stale / "manifest.json").write_text("{}")  # a half-written entry from a killed build
    manifest = cached_benchmark("tiny", seed=5)
    assert manifest == root / name / "manifest.json" and json.loads(manifest.read_text())["seed"] == 5
    assert not stale.exists() and fake_training == [5]
    assert cached_benchmark("tiny", seed=5) == manifest and fake_training == [5]  # cache hit
    out = cached_benchmark("tiny", seed=5, out_dir=tmp_path / "copy")
    assert load_manifest(out).splits["forget"]["qa"].read_bytes() == (root / name / "forget/qa.jsonl").read_bytes()


def test_concurrent_builders_build_once(fake_training) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cached_benchmark("tiny", seed=7))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 3 and fake_training == [7]
    assert not [p for p in results[0].parent.parent.iterdir() if ".tmp-" in p.name]


def test_out_dir_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    with pytest.raises(UserError, match="is not empty"):
        build_benchmark(tmp_path, preset="tiny")
    assert (tmp_path / "x").read_text() == "mine"


def test_cli_build_copies_cached_build(fake_training, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = run(["benchmark", "build", "--out", str(tmp_path / "b"), "--preset", "tiny", "--seed", "3",
                "--forget-domain", "music", "--forget-fraction", "0.5"])
    assert code == 0, capsys.readouterr().err
    raw = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert raw["forget_domain"] == "music" and raw["forget_fraction"] == 0.5 and raw["seed"] == 3
    assert "max_expert_load_ratio=2.5" in capsys.readouterr().out
    assert fake_training == [3]


@pytest.mark.parametrize(("args", "message"), [
    (["--forget-domain", "chemistry"], "unknown forget domain 'chemistry'"),
    (["--forget-fraction", "0"], r"must be in \(0, 1\]"),
    (["--preset", "huge"], "unknown benchmark preset 'huge'"),
])
def test_cli_bad_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    assert run(["benchmark", "build", "--out", str(tmp_path / "o"), *args]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_cli_non_empty_out_dir_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert run(["benchmark", "build", "--out", str(tmp_path), "--preset", "tiny"]) == 2
    assert "is not empty" in capsys.readouterr().err
