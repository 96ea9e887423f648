"""The adapters inside real runs of the engine on the tiny embedded benchmark."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from moe_unlearn.adapters.routing_io import capture
from moe_unlearn.adapters.seuf import expert_affinity
from moe_unlearn.data import UnlearnData, collate, encode_qa
from moe_unlearn.errors import UserError
from moe_unlearn.models import load_model


@pytest.mark.parametrize("method", ["ga", "graddiff"])
def test_grip_closes_the_router_shortcut(method, adapter_run):
    """Routers-only unlearning (the shortcut probe): without GRIP retained routing collapses and
    the forget set is 'forgotten' by re-routing alone; with GRIP neither happens."""
    common = ("train.params=[routers]", "train.lr=1e-2", "train.max_steps=20")
    plain = adapter_run(f"{method}-plain", *common, method=method)
    grip = adapter_run(f"{method}-grip", *common, "adapters=[grip]", "grip.mode=project", method=method)
    s_plain, s_grip = plain["routing"]["stability"]["retain"], grip["routing"]["stability"]["retain"]
    assert s_grip >= 0.95
    assert s_grip > s_plain + 0.1
    assert grip["forget"]["mc_acc"] > plain["forget"]["mc_acc"]
    info = grip["adapter_info"]["grip"]
    assert info["projector_bytes"] > 0 and len(info["null_dim"]) == 4
    assert any(d > 0 for layer in info["null_dim"] for d in layer)  # some rows kept room to move


def test_seuf_trains_only_its_slice_and_router(adapter_run, tiny_benchmark, tmp_path):
    metrics = adapter_run("seuf", "adapters=[seuf]", "seuf.train_router=true", "train.lr=1e-2", "train.max_steps=3")
    out = tmp_path / "seuf"
    attribution = json.loads((out / "seuf_attribution.json").read_text())
    assert (out / "seuf_attribution.png").stat().st_size > 0
    (target,) = attribution["targets"]
    layer, expert = target["layer"], target["expert"]
    before = load_file(str(tiny_benchmark.parent / "model" / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    prefix = f"model.layers.{layer}.mlp"
    router = f"{prefix}.gate.weight"
    assert router in changed
    expert_keys = {k for k in changed if k.startswith(f"{prefix}.experts.")}
    assert expert_keys and all(f".experts.{expert}." in k for k in expert_keys)  # hub layout: one tensor per expert
    assert changed == {router} | expert_keys  # everything else bit-identical
    info = metrics["adapter_info"]["seuf"]
    assert info["targets"][0]["affinity"] == pytest.approx(max(max(a) for a in attribution["affinity"]), abs=1e-6)
    assert metrics["memory"]["trainable_params"] == info["trained_params"]
    # the target is the arg-max of the affinity SEUF computed, and that affinity is the one of the
    # ORIGINAL model on the forget training batches (what SEUF guarantees; which expert wins is a
    # property of one trained model, so it is not asserted)
    flat = [(v, li, e) for li, row in enumerate(attribution["affinity"]) for e, v in enumerate(row)]
    assert (layer, expert) == max(flat, key=lambda t: (t[0], -t[1], -t[2]))[1:]
    model, tok = load_model(str(tiny_benchmark.parent / "model"))
    recs = UnlearnData.from_manifest(tiny_benchmark).forget.qa
    examples = [encode_qa(tok, r["question"], r["answer"], max_length=64) for r in recs]
    batches = [collate(examples[i:i + 8], tok.pad_token_id) for i in range(0, len(examples), 8)]
    recomputed = expert_affinity(capture(model, batches))
    for got, want in zip(attribution["affinity"], recomputed):
        assert got == pytest.approx(want.tolist(), rel=1e-6, abs=1e-9)
    assert all(0 < sum(row) <= 1 + 1e-9 for row in attribution["affinity"])  # top-k gate mass per token


def test_seuf_without_router_trains_only_the_slice(adapter_run, tiny_benchmark, tmp_path):
    """seuf.train_router=false: the target expert slice alone changes; no anchor term is logged."""
    metrics = adapter_run("seuf-slice", "adapters=[seuf]", "seuf.train_router=false", "train.lr=1e-2",
                          "train.max_steps=3")
    out = tmp_path / "seuf-slice"
    (target,) = json.loads((out / "seuf_attribution.json").read_text())["targets"]
    before = load_file(str(tiny_benchmark.parent / "model" / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    prefix = f"model.layers.{target['layer']}.mlp.experts.{target['expert']}."
    assert changed and all(k.startswith(prefix) for k in changed)
    assert metrics["memory"]["trainable_params"] == metrics["adapter_info"]["seuf"]["trained_params"]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert log and not any("seuf/anchor" in r for r in log)


COMBOS = {  # every base method with an adapter combination, each adapter exercised several times
    "ga": ["seuf", "grip"],
    "graddiff": ["trace", "grip"],
    "npo": ["seuf", "trace"],
    "simnpo": ["trace", "grip"],
    "dpo": ["seuf", "trace"],
    "rmu": ["trace", "grip"],
    "wga": ["seuf", "trace"],
    "undial": ["seuf", "trace", "grip"],
}


@pytest.mark.parametrize("method", sorted(COMBOS))
def test_adapter_combinations_run_with_every_method(method, adapter_run):
    adapters = COMBOS[method]
    extra = ["grip.ptc_routers=trainable", "grip.ptc_check_batches=1"] if "grip" in adapters else []
    metrics = adapter_run(method, f"adapters=[{','.join(adapters)}]", *extra, "eval.metrics=[nll]", method=method)
    assert metrics["steps"] == 2 and set(metrics["adapter_info"]) == set(adapters)
    assert all(v == v for v in (metrics["forget"]["nll"], metrics["retain"]["nll"]))  # finite, not NaN
    if "trace" in adapters:
        assert metrics["adapter_info"]["trace"]["critical"]
    if "grip" in adapters:
        assert metrics["adapter_info"]["grip"]["ptc"]  # the default mode refits after training


def test_impossible_combinations_are_user_errors(adapter_run):
    with pytest.raises(UserError, match="method 'ga' has no retain term"):
        adapter_run("ga-trace", "adapters=[trace]", method="ga")
    with pytest.raises(UserError, match="'seuf' trains only what it selects"):
        adapter_run("seuf-grip", "adapters=[seuf,grip]")


def test_grip_consistency_term_holds_routing_when_everything_trains(adapter_run, tmp_path):
    """All parameters trained: projection alone cannot stop the upstream drift (methods.md section
    7); the routing-consistency retain term does."""
    plain = adapter_run("all-plain", "train.max_steps=12")
    cons = adapter_run("all-cons", "train.max_steps=12", "adapters=[grip]", "grip.mode=project", "grip.consistency=10")
    assert cons["routing"]["stability"]["retain"] > plain["routing"]["stability"]["retain"] + 0.1
    assert cons["retain"]["nll"] < plain["retain"]["nll"]
    # GA has no retain term: the engine runs the retain forward the term needs (needs_retain_forward)
    adapter_run("ga-cons", "adapters=[grip]", "grip.mode=project", "grip.consistency=1", method="ga")
    log = [json.loads(x) for x in (tmp_path / "ga-cons" / "log.jsonl").read_text().splitlines() if '"eval"' not in x]
    assert log and all(rec["grip/consistency"] >= 0 for rec in log)
    assert all(rec["loss"] == pytest.approx(rec["forget_loss"] + rec["grip/consistency"], rel=1e-5) for rec in log)


def test_a_loss_no_trained_parameter_feeds_is_one_user_error(adapter_run, tmp_path):
    """RMU steers layer 0's output but only an expert of the last MoE layer trains: nothing to train
    (SEUF with a frozen router on a layer after rmu.layer is such a run); one line, not a traceback."""
    with pytest.raises(UserError, match="method 'rmu': no loss term depends on a trained parameter"):
        adapter_run("rmu-late", "rmu.layer=0", "train.params=[expert:1:0]", method="rmu")
    assert not (tmp_path / "rmu-late" / "model").exists()
