"""The runner on a tiny random OLMoE with synthetic splits: contract keys, stability, replay,
activation, caching, relearning, and MC accuracy on a model whose logits we control."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from moe_unlearn.errors import UserError
from moe_unlearn.eval import EvalCache, EvalContext, capture_eval_routing, evaluate_model

from eval_helpers import FixedLogits, make_cfg, make_data, perturbed

CORE = ["nll", "prob", "token_acc", "mc_acc", "stability", "activation", "replay"]


def test_unchanged_model_is_perfectly_stable_and_replay_changes_nothing(tiny):
    model, tok = tiny
    data, cfg = make_data(), make_cfg(metrics=CORE)
    orig = capture_eval_routing(model, tok, data, cfg)
    out = evaluate_model(model, tok, data, cfg, original_routing=orig, progress=False)
    for split in ("forget", "retain", "holdout"):
        assert out["routing"]["stability"][split] == 1.0
        assert out["routing"]["per_layer"][split] == [1.0, 1.0]
        assert out[split]["nll"] > 0 and 0 < out[split]["prob"] < 1
        assert out[split]["mc_acc"] in {i / 6 for i in range(7)}
    assert out["routing"]["activation"]["shift"] == 0.0
    rep = out["replay"]
    assert rep["with_replay"]["nll"] == pytest.approx(rep["without"]["nll"], abs=1e-5)
    assert rep["with_replay"]["token_acc"] == pytest.approx(rep["without"]["token_acc"])
    assert rep["value"] == pytest.approx(0.0)
    assert out["forget"]["nll"] == pytest.approx(rep["without"]["nll"])


def test_changed_model_shifts_routing_and_replay_uses_original_routing(tiny):
    model, tok = tiny
    data, cfg = make_data(), make_cfg(metrics=CORE)
    orig = capture_eval_routing(model, tok, data, cfg)
    other = perturbed(model, 0.05)
    out = evaluate_model(other, tok, data, cfg, original_model=model, progress=False)
    stab = out["routing"]["stability"]
    assert all(0.0 < stab[s] < 1.0 for s in stab)
    assert len(out["per_example"]["forget"]["stability"]) == 6
    assert out["routing"]["activation"]["shift"] > 0
    act = out["routing"]["activation"]["forget"]
    assert [sum(row) for row in act["before"]] == pytest.approx([2.0, 2.0])  # frequencies sum to k
    # replaying the original routing changes the answer NLL of the changed model
    rep = out["replay"]
    assert rep["with_replay"]["nll"] != pytest.approx(rep["without"]["nll"], abs=1e-6)
    # original_model= and original_routing= give the same numbers
    again = evaluate_model(other, tok, data, cfg, original_routing=orig, progress=False)
    assert again["routing"]["stability"] == stab and again["replay"] == rep


def test_contract_keys_and_missing_mc_is_none(tiny):
    model, tok = tiny
    out = evaluate_model(model, tok, make_data(mc=False), make_cfg(metrics=["nll"]), progress=False)
    for split in ("forget", "retain", "holdout"):
        assert set(out[split]) >= {"nll", "mc_acc"} and out[split]["mc_acc"] is None
    assert out["routing"]["stability"] == {"forget": None, "retain": None, "holdout": None}
    assert out["metric_info"]["nll"]["higher_is_better"] is False


def test_original_routing_on_other_data_is_refused(tiny):
    model, tok = tiny
    orig = capture_eval_routing(model, tok, make_data(4), make_cfg())
    with pytest.raises(UserError, match="different inputs"):
        evaluate_model(model, tok, make_data(6), make_cfg(metrics=["stability"]), original_routing=orig, progress=False)


def test_cache_reuses_results_for_an_unchanged_model(tiny):
    model, tok = tiny
    data, cfg, cache = make_data(), make_cfg(metrics=["nll", "prob", "privacy"]), EvalCache()
    first = evaluate_model(model, tok, data, cfg, cache=cache, progress=False)
    n = len(cache)
    assert n == 3 * 3 + 1  # nll, mc_acc, prob per split + privacy
    second = evaluate_model(model, tok, data, cfg, cache=cache, progress=False)
    assert len(cache) == n
    first.pop("eval_seconds"), second.pop("eval_seconds")
    assert first == second
    evaluate_model(perturbed(model), tok, data, cfg, cache=cache, progress=False)
    assert len(cache) == 2 * n  # another fingerprint, new entries


def test_cache_encodes_each_eval_set_once_across_models(tiny, monkeypatch):
    """The encoded eval sets are keyed by the data, not the model: a second model evaluated with
    the same cache tokenizes nothing, and its numbers equal an evaluation without the cache."""
    import moe_unlearn.eval.batches as batches

    model, tok = tiny
    data, cfg, cache = make_data(), make_cfg(metrics=["nll", "mc_acc", "privacy"]), EvalCache()
    encoded: list[str] = []
    for name in ("encode_qa", "encode_mc", "encode_text"):
        real = getattr(batches, name)
        monkeypatch.setattr(batches, name, lambda *a, _real=real, _name=name, **k: encoded.append(_name) or _real(*a, **k))
    evaluate_model(model, tok, data, cfg, cache=cache, progress=False)
    assert {"encode_qa", "encode_mc", "encode_text"} <= set(encoded)
    n = len(encoded)
    other = perturbed(model)
    with_cache = evaluate_model(other, tok, data, cfg, cache=cache, progress=False)
    assert len(encoded) == n and cache.hits == 0  # new weights: encodings reused, results scored
    without = evaluate_model(other, tok, data, cfg, progress=False)
    with_cache.pop("eval_seconds"), without.pop("eval_seconds")
    assert with_cache == without


def test_model_fingerprint_follows_the_weights(tiny):
    from moe_unlearn.eval import model_fingerprint

    model, _ = tiny
    other = perturbed(model, 0.0)
    assert model_fingerprint(other) == model_fingerprint(model)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(other) != model_fingerprint(model)


def test_generation_privacy_and_tofu_metrics_run(tiny):
    model, tok = tiny
    cfg = make_cfg(metrics=["rouge_qa", "rouge_text", "privacy", "truth_ratio", "model_utility", "utility_mc"])
    out = evaluate_model(model, tok, make_data(), cfg, progress=False)
    assert 0.0 <= out["forget"]["rouge_qa"] <= 1.0 and 0.0 <= out["retain"]["rouge_qa"] <= 1.0
    assert 0.0 <= out["forget"]["rouge_text"] <= 1.0
    assert out["holdout"]["rouge_qa"] is None and out["retain"]["rouge_text"] is None  # MUSE's sets only
    for split in ("forget", "retain", "holdout"):
        assert len(out["per_example"][split]["truth_ratio"]) == 6
    assert out["privacy"]["on"] == "text"
    assert set(out["privacy"]["auc"]) == {"loss", "zlib", "mink", "minkpp"}
    assert all(0.0 <= a <= 1.0 for a in out["privacy"]["auc"].values())
    priv = out["privacy"]
    assert priv["privleak"]["mink"] == pytest.approx((priv["auc"]["mink"] - 0.5) / 0.5 * 100)
    assert priv["value"] == priv["privleak"]["mink"] and priv["k"] == 0.4 and priv["orientation"] == "muse"
    for s in ("loss", "zlib", "mink", "minkpp"):  # the member orientation is the complement
        assert priv["member_auc"][s] == pytest.approx(1 - priv["auc"][s])
        assert priv["member_privleak"][s] == pytest.approx((priv["member_auc"][s] - 0.5) / 0.5 * 100)
    assert 0.0 <= out["model_utility"]["value"] <= 1.0
    assert out["utility_mc"]["value"] in {i / 4 for i in range(5)}


def test_forget_quality_against_a_retrained_reference(tiny):
    model, tok = tiny
    cfg = make_cfg(metrics=["truth_ratio", "forget_quality", "privacy"])
    ref = evaluate_model(model, tok, make_data(), cfg, progress=False)
    out = evaluate_model(model, tok, make_data(), cfg, retrained=ref, progress=False)
    assert out["forget_quality"]["value"] == pytest.approx(1.0)  # identical truth-ratio samples
    assert out["privacy"]["privleak"]["mink"] == pytest.approx(0.0)  # same AUC as the reference


def test_relearning_brings_forget_knowledge_back(tiny):
    model, tok = tiny
    before = [p.detach().clone() for p in model.parameters()]
    cfg = make_cfg(metrics=["relearn"], relearn={"steps": 4, "lr": 3e-3, "fraction": 0.5, "eval_every": 2})
    out = evaluate_model(model, tok, make_data(), cfg, progress=False)
    curve = out["relearn"]["curve"]
    assert [c["step"] for c in curve] == [0, 2, 4]
    assert curve[-1]["nll"] < curve[0]["nll"] - 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # trained a copy


def test_mc_accuracy_on_controlled_logits(tiny):
    _, tok = tiny
    c_id = tok.convert_tokens_to_ids("c")
    recs = [
        {"question": "Q1?", "choices": ["a", "b", "c", "d"], "answer": 2},
        {"question": "Q2?", "choices": ["a", "b", "c", "d"], "answer": 0},
        {"question": "Q3?", "choices": ["c", "b", "a", "d"], "answer": 0},
    ]
    data = SimpleNamespace(forget=SimpleNamespace(qa=None, text=None, mc=recs), retain=None, holdout=None, utility_mc=None)
    ctx = EvalContext(FixedLogits(c_id), tok, data, make_cfg())
    res = ctx.result("mc_acc", "forget")
    assert res.per_example == [1.0, 0.0, 1.0] and res.value == pytest.approx(2 / 3)
    assert res.details["chance"] == 0.25


def test_runner_on_the_tiny_benchmark(tiny_benchmark):
    from moe_unlearn.data import UnlearnData
    from moe_unlearn.models import load_model

    data = UnlearnData.from_manifest(tiny_benchmark)
    model, tok = load_model(data.model)
    cfg = make_cfg(max_examples=8, metrics=["nll", "token_acc", "mc_acc", "stability", "replay", "utility_mc"])
    out = evaluate_model(model, tok, data, cfg, original_model=model, progress=False)
    # the benchmark model knows its training facts and has never seen the holdout ones
    assert out["forget"]["token_acc"] > 0.8 and out["retain"]["token_acc"] > 0.8
    assert out["forget"]["nll"] < out["holdout"]["nll"]
    assert out["forget"]["mc_acc"] >= 0.75 and out["utility_mc"]["value"] >= 0.75
    assert out["routing"]["stability"] == {"forget": 1.0, "retain": 1.0, "holdout": 1.0}
    assert out["replay"]["value"] == pytest.approx(0.0)


def test_replay_undoes_a_router_only_change(tiny):
    """Only the routers changed: with the original routing replayed, the forget metrics are
    exactly the original model's (the 'forgetting' was re-routing and replay exposes it)."""
    import copy

    from moe_unlearn.models import moe_layers

    model, tok = tiny
    data, cfg = make_data(), make_cfg(metrics=["nll", "token_acc", "replay"])
    base = evaluate_model(model, tok, data, cfg, progress=False)
    rerouted = copy.deepcopy(model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in moe_layers(rerouted):
            layer.router_weight.add_(torch.randn(layer.router_weight.shape, generator=g))
    out = evaluate_model(rerouted, tok, data, cfg, original_model=model, progress=False)
    assert out["forget"]["nll"] != pytest.approx(base["forget"]["nll"], abs=1e-3)  # routing did change
    assert out["replay"]["with_replay"]["nll"] == pytest.approx(base["forget"]["nll"], abs=1e-5)
    assert out["replay"]["with_replay"]["token_acc"] == pytest.approx(base["forget"]["token_acc"])


def test_max_generated_caps_only_the_generation_metrics(tiny):
    model, tok = tiny
    full = evaluate_model(model, tok, make_data(), make_cfg(metrics=["rouge_qa", "rouge_text"]), progress=False)
    capped = evaluate_model(model, tok, make_data(), make_cfg(metrics=["rouge_qa", "rouge_text"], max_generated=2),
                            progress=False)
    for name in ("rouge_qa", "rouge_text"):
        assert len(capped["per_example"]["forget"][name]) == 2 < len(full["per_example"]["forget"][name])
        assert capped["per_example"]["forget"][name] == full["per_example"]["forget"][name][:2]  # same pairs
    assert capped["per_example"]["forget"]["mc_acc"] == full["per_example"]["forget"]["mc_acc"]  # all items


def test_splits_limits_the_split_metrics_to_the_named_splits(tiny):
    model, tok = tiny
    data, cfg = make_data(), make_cfg(metrics=["nll", "mc_acc"])
    full = evaluate_model(model, tok, data, cfg, progress=False)
    part = evaluate_model(model, tok, data, cfg, progress=False, splits=("forget", "retain"))
    for split in ("forget", "retain"):
        assert part[split]["nll"] == full[split]["nll"] and part[split]["mc_acc"] == full[split]["mc_acc"]
    assert full["holdout"]["nll"] is not None
    assert part["holdout"]["nll"] is None and part["holdout"]["mc_acc"] is None
    assert "holdout" not in {s for s, v in part["per_example"].items() if v}
