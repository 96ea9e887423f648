"""`moe-unlearn inspect`: exact counts against an independent recomputation, and error lines."""

import json

import pytest
import torch

from moe_unlearn.cli.main import run
from moe_unlearn.models import save_model, tiny_model, tiny_tokenizer

TEXTS = ["The quick brown fox.", "jumps over", "the lazy dog, and then some more text here", "x", "Mixture of experts"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    model, tok = tiny_model("olmoe"), tiny_tokenizer()
    save_model(model, tok, root / "model")
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)) + "\n")
    return root, model, tok


def expected_counts(model, tok, texts):
    """Counts from outputs.router_logits, one unpadded text at a time (OLMoE: softmax -> top-k)."""
    counts, tokens = torch.zeros(2, 8, dtype=torch.long), 0
    with torch.no_grad():
        for text in texts:
            ids = tok([text], return_tensors="pt").input_ids
            tokens += ids.shape[1]
            out = model(input_ids=ids, output_router_logits=True)
            for layer, logits in enumerate(out.router_logits):
                counts[layer] += torch.bincount(logits.softmax(-1).topk(2).indices.reshape(-1), minlength=8)
    return counts, tokens


def test_exact_counts_and_heatmap(setup, capsys):
    root, model, tok = setup
    out, plot = root / "stats.json", root / "plots" / "heat.png"
    code = run(["inspect", str(root / "model"), "--data", str(root / "data.jsonl"), "--out", str(out),
                "--plot", str(plot), "--batch-size", "2", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    stats = json.loads(out.read_text())
    counts, tokens = expected_counts(model, tok, TEXTS)
    assert set(stats) == {"model", "tokens", "layers"} and stats["model"] == str(root / "model")
    assert stats["tokens"] == tokens == sum(len(t) for t in TEXTS)
    assert [layer["name"] for layer in stats["layers"]] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    for i, layer in enumerate(stats["layers"]):
        assert (layer["num_experts"], layer["top_k"]) == (8, 2)
        assert sum(layer["counts"]) == tokens * 2
        assert layer["counts"] == counts[i].tolist()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_max_tokens_cuts_exactly(setup):
    root, model, tok = setup
    out = root / "cut.json"
    assert run(["inspect", str(root / "model"), "--data", str(root / "data.jsonl"), "--out", str(out),
                "--max-tokens", "25", "--device", "cpu"]) == 0
    stats = json.loads(out.read_text())
    first25 = (TEXTS[0] + TEXTS[1])[:25]
    counts, _ = expected_counts(model, tok, [TEXTS[0], TEXTS[1][: 25 - len(TEXTS[0])]])
    assert stats["tokens"] == len(first25) == 25
    assert [layer["counts"] for layer in stats["layers"]] == counts.tolist()


@pytest.mark.parametrize("lines, message", [
    ('{"text": "ok"}\n{"text": "broken"\n', "bad.jsonl: line 2: not valid JSON"),
    ('{"text": "ok"}\n\n{"body": "x"}\n', "bad.jsonl: line 3: missing field 'text'"),
    ("\n", "no records"),
])
def test_bad_data_lines(setup, capsys, lines, message):
    root, _, _ = setup
    bad = root / "bad.jsonl"
    bad.write_text(lines)
    assert run(["inspect", str(root / "model"), "--data", str(bad), "--out", str(root / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("moe-unlearn: error:") and "\n" not in err


@pytest.mark.parametrize("case, message", [
    ("missing_model", "does not exist"),
    ("missing_data", "data file not found"),
    ("out_in_model", "is inside the input model dir"),
])
def test_usage_errors(setup, capsys, case, message):
    root, _, _ = setup
    model, data, out = str(root / "model"), str(root / "data.jsonl"), str(root / "y.json")
    if case == "missing_model":
        model = str(root / "no-model")
    elif case == "missing_data":
        data = str(root / "none.jsonl")
    else:
        out = str(root / "model" / "stats.json")
    assert run(["inspect", model, "--data", data, "--out", out]) == 2
    assert message in capsys.readouterr().err
    assert not (root / "model" / "stats.json").exists()


def test_non_utf8_data(setup, capsys):
    root, _, _ = setup
    bad = root / "latin1.jsonl"
    bad.write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    assert run(["inspect", str(root / "model"), "--data", str(bad), "--out", str(root / "z.json")]) == 2
    assert "not readable as UTF-8" in capsys.readouterr().err
