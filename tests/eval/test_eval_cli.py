"""`moe-unlearn eval` end to end on a tiny saved model and a hand-written manifest."""

from __future__ import annotations

import json

import pytest

from moe_unlearn.cli.main import run
from moe_unlearn.models import tiny_model, tiny_tokenizer

from eval_helpers import _mc, _qa, _text, perturbed


def _jsonl(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path.relative_to(path.parents[1]))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """(manifest path, base model dir, changed model dir) in a temp folder."""
    root = tmp_path_factory.mktemp("bench")
    tok, base = tiny_tokenizer(), tiny_model("olmoe", seed=0)
    base.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    changed = perturbed(base, 0.05)
    changed.save_pretrained(root / "changed")
    tok.save_pretrained(root / "changed")
    manifest = {"model": "model", "utility_mc": _jsonl(root / "u" / "mc.jsonl", _mc(4, "u"))}
    for split in ("forget", "retain", "holdout"):
        manifest[split] = {
            "qa": _jsonl(root / split / "qa.jsonl", _qa(5, split)),
            "text": _jsonl(root / split / "text.jsonl", _text(5, split)),
            "mc": _jsonl(root / split / "mc.jsonl", _mc(5, split)),
        }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root / "manifest.json", root / "model", root / "changed"


def test_eval_with_manifest_writes_metrics(bench, tmp_path, capsys):
    manifest, base, changed = bench
    out = tmp_path / "metrics.json"
    argv = ["eval", str(manifest), "eval.metrics=[nll,stability,replay,privacy]", "eval.batch_size=3",
            "--model", str(changed), "--original", str(base), "--out", str(out), "--device", "cpu", "--quiet"]
    assert run(argv) == 0
    m = json.loads(out.read_text())
    assert {"method", "adapters", "steps", "forget", "retain", "holdout", "routing", "timing"} <= set(m)
    assert set(m["timing"]) == {"step_seconds_median", "total_seconds"}  # as the unlearn command writes it
    assert all(0 < m["routing"]["stability"][s] < 1 for s in ("forget", "retain", "holdout"))
    assert m["forget"]["nll"] > 0 and m["forget"]["mc_acc"] is not None
    assert set(m["privacy"]["auc"]) == {"loss", "zlib", "mink", "minkpp"}
    assert "stability forget" in capsys.readouterr().out
    # the same model against itself: routing unchanged, nothing to replay
    assert run(["eval", str(manifest), "eval.metrics=[replay]", "--model", str(base), "--original", str(base),
                "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert m["routing"]["stability"]["retain"] == 1.0 and m["replay"]["value"] == pytest.approx(0.0)


def test_eval_with_unlearn_yaml_uses_its_data_and_eval_sections(bench, tmp_path):
    manifest, base, _ = bench
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"method: graddiff\nadapters: [grip]\ndata:\n  manifest: {manifest}\neval:\n  metrics: [nll, prob]\n")
    out = tmp_path / "m.json"
    assert run(["eval", str(cfg), "--model", str(base), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert m["method"] == "graddiff" and m["adapters"] == ["grip"]
    assert 0 < m["retain"]["prob"] < 1 and m["routing"]["stability"]["forget"] is None  # no --original


def test_eval_user_errors_are_one_line_exit_2(bench, tmp_path, capsys):
    manifest, base, _ = bench
    cases = [
        (["--model", str(base), "--out", str(base / "metrics.json")], "is inside the input --model dir"),
        (["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "m.json")], "not a directory"),
    ]
    for extra, message in cases:
        assert run(["eval", str(manifest), *extra, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert run(["eval", str(manifest), "eval.metrics=[nl]", "--model", str(base), "--out", str(tmp_path / "m.json")]) == 2
    assert "did you mean 'nll'" in capsys.readouterr().err
