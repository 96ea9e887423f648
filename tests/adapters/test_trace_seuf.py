"""TRACE's weights and SEUF's attribution and anchor on tiny models (no engine)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from moe_unlearn.adapters.routing_io import capture
from moe_unlearn.adapters.seuf import Seuf, SeufConfig, expert_affinity, top_pairs
from moe_unlearn.adapters.trace import Trace, TraceConfig, odds_weight
from moe_unlearn.models.routing import capture_routing
from moe_unlearn.models.tiny import tiny_model
from tests.adapters.conftest import random_batches


def _splits():
    return random_batches(4, seed=3, low=128), random_batches(6, seed=4, high=128)


def test_trace_weighted_retain_frequency_matches_forget_frequency(fake_ctx):
    forget, retain = _splits()
    model = tiny_model("olmoe", seed=1)
    ctx = fake_ctx(model, forget=forget, retain=retain)
    trace = Trace(TraceConfig(top_m=1, layers=[1], w_max=1e6))
    trace.check(ctx)
    trace.prepare(ctx)
    (crit,) = trace.critical
    assert crit.f_forget > crit.f_retain and 1 < crit.weight < 1e6  # unclipped
    num = den = 0.0
    for batch in retain:
        with capture_routing(model) as routing:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        w = trace.retain_token_weights(ctx, batch, routing)  # [B, S]
        mask = batch["attention_mask"].bool()
        assert w.shape == mask.shape and torch.all(w[~mask] == 1)
        hit = routing.selections(0, crit.layer).eq(crit.expert).any(dim=-1)
        num += float((w * hit)[mask].sum())
        den += float(w[mask].sum())
    assert num / den == pytest.approx(crit.f_forget, abs=1e-6)


def test_trace_weights_combine_and_clip(fake_ctx):
    forget, retain = _splits()
    model = tiny_model("olmoe", seed=1)
    ctx = fake_ctx(model, forget=forget, retain=retain)
    prod = Trace(TraceConfig(top_m=2, w_max=3.0, combine="product"))
    prod.prepare(ctx)
    assert len(prod.critical) >= 3 and all(1 <= c.weight <= 3.0 for c in prod.critical)
    mx = Trace(TraceConfig(top_m=2, w_max=3.0, combine="max"))
    mx.prepare(ctx)
    batch = retain[0]
    with capture_routing(model) as routing:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    wp, wm = prod.retain_token_weights(ctx, batch, routing), mx.retain_token_weights(ctx, batch, routing)
    assert torch.all(wp >= wm) and torch.all(wm <= 3.0) and float(wp.max()) > 3.0  # products exceed w_max
    assert odds_weight(torch.tensor([0.5, 0.1, 0.9]), torch.tensor([0.1, 0.5, 0.0]), 5.0).tolist() == [5.0, 1.0, 5.0]
    assert odds_weight(torch.tensor([0.4]), torch.tensor([0.2]), 100.0).item() == pytest.approx(0.4 * 0.8 / (0.2 * 0.6))


def test_seuf_attribution_finds_the_expert_the_forget_data_loads(fake_ctx):
    forget, retain = _splits()
    model = tiny_model("qwen3_moe", seed=2)
    # make expert 5 of MoE layer 1 attract the forget tokens: bias its router row towards
    # the mean forget input
    ctx = fake_ctx(model, forget=forget, retain=retain)
    with capture_routing(model, router_inputs=True) as cap:
        for b in forget:
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    with torch.no_grad():
        ctx.layers[1].router_weight[5] += 3 * cap.layers[1].inputs.mean(0) / cap.layers[1].inputs.mean(0).norm()
    seuf = Seuf(SeufConfig(top_m=1))
    seuf.prepare(ctx)
    assert seuf.targets == [(1, 5)]
    assert (ctx.out_dir / "seuf_attribution.json").is_file() and (ctx.out_dir / "seuf_attribution.png").is_file()
    freq = capture(model, forget).frequencies()[1]
    assert int(freq.argmax()) == 5
    # affinity: per-sequence means averaged over sequences, each at most 1 and summing to <= 1
    aff = expert_affinity(capture(model, forget))
    assert all(float(a.sum()) <= 1 + 1e-9 for a in aff)
    assert top_pairs([torch.tensor([0.1, 0.3]), torch.tensor([0.5, 0.2])], 2) == [(1, 0), (0, 1)]


def test_seuf_anchor_loss_matches_its_formula_and_pulls_towards_the_target():
    model = tiny_model("olmoe", seed=0)
    seuf = Seuf(SeufConfig(alpha=2.0, train_router=True))
    seuf.targets = [(0, 3)]
    batch = random_batches(1, seed=5)[0]
    with capture_routing(model, keep_grad=True) as routing:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    out = SimpleNamespace(routing=routing)
    loss = seuf.loss_terms(None, {"forget": out})["anchor"]
    probs = torch.softmax(routing.layers[0].logits.detach().float(), -1)
    target = torch.zeros(8)
    target[3] = 1
    assert float(loss.detach()) == pytest.approx(2.0 * float((probs - target).pow(2).sum(-1).mean()), rel=1e-5)
    loss.backward()
    grad = model.model.layers[0].mlp.gate.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # a step against the gradient raises the target expert's probability
    with torch.no_grad():
        model.model.layers[0].mlp.gate.weight -= 1.0 * grad
    with capture_routing(model) as after:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert torch.softmax(after.layers[0].logits, -1)[:, 3].mean() > probs[:, 3].mean()


def test_trace_statistics_survive_a_checkpoint(fake_ctx, tmp_path):
    forget, retain = _splits()
    model = tiny_model("olmoe", seed=1)
    ctx = fake_ctx(model, forget=forget, retain=retain)
    trace = Trace(TraceConfig(top_m=2))
    trace.prepare(ctx)
    with capture_routing(model) as routing:
        model(input_ids=retain[0]["input_ids"], attention_mask=retain[0]["attention_mask"])
    trace.retain_token_weights(ctx, retain[0], routing)
    torch.save(trace.state_dict(), tmp_path / "state.pt")
    resumed = Trace(TraceConfig(top_m=2))
    resumed.prepare(ctx)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.summary() == trace.summary() and trace.summary()["mean_max_token_weight"] > 1
