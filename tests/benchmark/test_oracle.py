"""The retrain oracle of the tiny benchmark: what it trains on, where it is cached, and the
reference rows every run is read between."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from moe_unlearn.benchmark.cache import entry_name
from moe_unlearn.benchmark.generator import generate
from moe_unlearn.benchmark.oracle import cached_oracle, oracle_dir, reference_metrics, retain_only
from moe_unlearn.benchmark.presets import PRESETS
from moe_unlearn.config import build
from moe_unlearn.data import UnlearnData
from moe_unlearn.errors import UserError
from moe_unlearn.eval import EvalConfig


@pytest.fixture(scope="module")
def oracle(tiny_benchmark: Path) -> Path:
    return cached_oracle(tiny_benchmark)


def test_retain_only_drops_exactly_the_forget_entities() -> None:
    bench = generate(PRESETS.get("tiny").generator, seed=0)
    forget = {(r["domain"], r["entity"]) for r in bench.splits["forget"].qa}
    kept = retain_only(bench)
    assert forget and not forget & {(r["domain"], r["entity"]) for r in kept.train_qa + kept.train_text}
    n_forget_qa = sum((r["domain"], r["entity"]) in forget for r in bench.train_qa)
    assert len(kept.train_qa) == len(bench.train_qa) - n_forget_qa == len(bench.train_qa) * 4 // 5  # 1 of 5 domains
    assert len(kept.train_text) == len(bench.train_text) - len(bench.splits["forget"].text)
    assert kept.splits is bench.splits  # evaluation sets (and the tokenizer corpus) unchanged


def test_oracle_is_cached_next_to_its_benchmark_entry(tiny_benchmark: Path, oracle: Path) -> None:
    entry = tiny_benchmark.parent
    assert entry.name == entry_name("tiny", 0, None, 1.0)
    assert oracle.parent == oracle_dir(tiny_benchmark) == entry.parent / f"{entry.name}-oracle1"
    assert cached_oracle(tiny_benchmark) == oracle  # the second call reuses it
    info = json.loads((oracle.parent / "oracle.json").read_text())
    # same epochs as the base model over 4/5 of its training records
    assert info["base_steps"] == 400 and info["train_share"] == 0.8 and info["steps"] == 320
    base = AutoTokenizer.from_pretrained(entry / "model")
    assert AutoTokenizer.from_pretrained(oracle).get_vocab() == base.get_vocab()
    assert not list(entry.parent.glob(f".{oracle.parent.name}.tmp-*"))


def test_oracle_needs_an_embedded_benchmark_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"model": "m", "forget": {}, "retain": {}}))
    with pytest.raises(UserError, match="no build_config"):
        oracle_dir(tmp_path / "manifest.json")


def test_reference_rows_original_and_oracle(tiny_benchmark: Path, oracle: Path) -> None:
    data = UnlearnData.from_manifest(tiny_benchmark)
    cfg = build(EvalConfig, {"max_examples": 16, "batch_size": 8,
                             "metrics": ["nll", "mc_acc", "truth_ratio", "privacy", "forget_quality", "oracle_distance"]},
                "eval")
    refs = reference_metrics(tiny_benchmark, data, cfg)
    orig, row, ref = refs.original, refs.oracle, refs.retrained
    assert orig["reference"] == "original" and row["reference"] == "oracle"
    # what holds by construction: the original's routing is its own, the oracle read against itself
    assert orig["routing"]["stability"] == {"forget": 1.0, "retain": 1.0, "holdout": 1.0}
    assert row["privacy"]["privleak"] == {s: 0.0 for s in ("loss", "zlib", "mink", "minkpp")}
    assert row["forget_quality"]["value"] == pytest.approx(1.0) and row["oracle_distance"]["value"] == 0.0
    # every other row is read against the oracle's plain metrics
    assert orig["privacy"]["retrained_auc"] == ref["privacy"]["auc"]
    assert orig["privacy"]["retrained_auc_source"] == "retrained model"
    delta = orig["oracle_distance"]["delta"]
    for split in ("forget", "holdout"):
        assert delta[split]["nll"] == pytest.approx(orig[split]["nll"] - ref[split]["nll"])
        assert delta[split]["mc_acc"] == pytest.approx(orig[split]["mc_acc"] - ref[split]["mc_acc"])
    # the original model memorised the forget set, the oracle never saw it: a gap of several nats
    # (~0.05 vs ~8 on this build), so membership shows as MUSE's "target model" does (~-100)
    assert orig["forget"]["nll"] + 2.0 < ref["forget"]["nll"]
    assert orig["privacy"]["value"] < -50


def test_cli_retrained_oracle_for_eval_and_unlearn(tiny_benchmark: Path, oracle: Path, tmp_path: Path, capsys) -> None:
    import yaml

    from moe_unlearn.cli.main import run

    metrics = ["nll", "mc_acc", "truth_ratio", "privacy", "forget_quality", "oracle_distance"]
    out = tmp_path / "m.json"
    assert run(["eval", str(tiny_benchmark), f"eval.metrics=[{','.join(metrics)}]", "eval.max_examples=8",
                "--model", str(tiny_benchmark.parent / "model"), "--retrained", "oracle", "--out", str(out), "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert m["privacy"]["retrained_auc_source"] == "retrained model" and m["forget_quality"]["n_retrained"] == 8
    assert m["oracle_distance"]["value"] is not None

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"method": "ga", "data": {"manifest": str(tiny_benchmark), "batch_size": 4},
                                   "train": {"max_steps": 1, "checkpoint_every": 0},
                                   "eval": {"metrics": metrics, "max_examples": 8}}))
    assert run(["unlearn", str(cfg), "--out", str(tmp_path / "run"), "--retrained", "oracle", "--quiet"]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["privacy"]["retrained_auc_source"] == "retrained model" and "delta" in m["oracle_distance"]
    # a retain-only model's metrics.json works the same way
    assert run(["unlearn", str(cfg), "--out", str(tmp_path / "run2"), "--retrained", str(out), "--quiet"]) == 0
    m2 = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert m2["privacy"]["retrained_auc"] == json.loads(out.read_text())["privacy"]["auc"]

    # a benchmark that is not the embedded one has no oracle: one line, exit 2
    (tmp_path / "b").mkdir()
    fake = tmp_path / "b" / "manifest.json"
    fake.write_text(json.dumps({"model": str(tiny_benchmark.parent / "model"),
                                **{s: json.loads(tiny_benchmark.read_text())[s] for s in ("forget", "retain", "holdout")}}))
    for rel in ("forget", "retain", "holdout"):
        (tmp_path / "b" / rel).symlink_to(tiny_benchmark.parent / rel)
    capsys.readouterr()
    assert run(["eval", str(fake), "--model", str(tiny_benchmark.parent / "model"), "--retrained", "oracle",
                "--out", str(tmp_path / "x.json"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no build_config" in err and "\n" not in err
