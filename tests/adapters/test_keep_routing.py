"""keep_routing: its loss terms by hand, its declarations, and runs through the engine (tiny benchmark)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from moe_unlearn.adapters.keep_routing import KeepRouting, KeepRoutingConfig, kl_loss, margin_loss, topk_margin
from moe_unlearn.adapters.routing_io import selection_mask
from moe_unlearn.errors import UserError
from moe_unlearn.models.tiny import tiny_model
from tests.adapters.conftest import random_batches


def _log(path):
    return [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines() if '"eval"' not in x]


def test_margin_term_by_hand():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0],    # original top-2 {0, 1}: margin 2 - 1 = 1
                           [0.0, 2.2, 2.0, 1.0],    # original top-2 {0, 1}: margin 0 - 2.0 = -2 (flipped)
                           [1.0, 1.1, 0.9, 0.0]])   # original top-2 {0, 1}: margin 1.0 - 0.9 = 0.1
    selected = selection_mask(torch.tensor([[0, 1], [0, 1], [1, 0]]), 4)
    assert topk_margin(logits, selected).tolist() == pytest.approx([1.0, -2.0, 0.1])
    # relu(0.5 - m): 0, 2.5, 0.4 -> mean 0.9667
    assert float(margin_loss(logits, selected, 0.5)) == pytest.approx((0 + 2.5 + 0.4) / 3)
    assert float(margin_loss(logits, selected, 0.0)) == pytest.approx(2.0 / 3)


def test_kl_term_by_hand():
    orig = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    new = torch.tensor([[1.0, 1.0, -1.0], [0.0, 0.0, 0.0]])
    p, q = torch.softmax(orig, 1), torch.softmax(new, 1)
    by_hand = float((p[0] * (p[0].log() - q[0].log())).sum()) / 2  # second row: identical, KL 0
    assert float(kl_loss(new, orig)) == pytest.approx(by_hand, rel=1e-6)
    assert float(kl_loss(orig, orig)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("overrides, message", [
    ({"weight": 0}, "'keep_routing.weight' must be > 0"),
    ({"margin": -1}, "'keep_routing.margin' must be >= 0"),
    ({"layers": []}, "'keep_routing.layers' must be a non-empty list"),
    ({"roles": ["holdout"]}, "'keep_routing.roles' must be a non-empty list of forget, retain"),
    ({"batch_size": 0}, "'keep_routing.batch_size' must be >= 1 or null"),
])
def test_bad_settings_are_user_errors(overrides, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        KeepRoutingConfig(**overrides).validate("keep_routing")


def test_declarations_follow_the_settings():
    own = KeepRouting.needs(KeepRoutingConfig(batch_size=16, roles=["retain", "forget"]))
    assert not own.retain_forward  # it draws its own retain batch
    assert own.capture == {"retain", "forget"} and own.capture_grad and own.extra_rows == 16
    shared = KeepRouting.needs(KeepRoutingConfig(batch_size=None, roles=["retain"]))
    assert shared.retain_forward and shared.capture == {"retain"} and shared.extra_rows == 0
    assert not shared.reference and KeepRouting.needs(KeepRoutingConfig(original="reference")).reference
    assert KeepRouting.needs(KeepRoutingConfig(batch_size=16, roles=["forget"])).extra_rows == 0


def test_cache_holds_the_original_routing_of_every_example(fake_ctx):
    model = tiny_model("olmoe", seed=1)
    forget, retain = random_batches(2, seed=3), random_batches(3, seed=4)
    for split in (forget, retain):  # the engine's splits carry each example's index
        for i, b in enumerate(split):
            b["index"] = torch.arange(i * 4, i * 4 + 4)
    ctx = fake_ctx(model, forget=forget, retain=retain)
    ctx.split_size = lambda role: 4 * len(ctx.splits[role])
    adapter = KeepRouting(KeepRoutingConfig(loss="margin+kl", roles=["retain", "forget"], batch_size=None))
    adapter.prepare(ctx)
    batch = retain[1]
    original = adapter._original(ctx, "retain", batch)
    from moe_unlearn.adapters.routing_io import capture

    cap = capture(model, [batch])
    assert sorted(original) == list(range(len(cap.layers)))  # every layer held (layers: null)
    for layer, orig in original.items():
        assert torch.equal(orig.indices.long(), cap.layers[layer].indices.cpu())
        assert torch.allclose(orig.logits, cap.layers[layer].logits.float().cpu())
    t, e = cap.layers[0].logits.shape
    assert adapter.summary()["cache_bytes"] > 0 and len(adapter.cache["forget"]) == 8


def test_ga_gets_its_retain_forward_and_the_loss_adds_up(adapter_run, tmp_path):
    """GA has no retain term: with batch_size null the engine runs the retain forward the term needs;
    with a batch size the adapter draws its own retain batch. Both hold forget routing too."""
    adapter_run("ga-keep", "adapters=[keep_routing]", "keep_routing.batch_size=null", method="ga")
    adapter_run("ga-own", "adapters=[keep_routing]", "keep_routing.batch_size=4", method="ga")
    for name in ("ga-keep", "ga-own"):
        log = _log(tmp_path / name)
        assert log and all(r["keep_routing/margin"] >= 0 and r["keep_routing/kl"] >= -1e-7 for r in log)
        for r in log:
            assert r["loss"] == pytest.approx(r["forget_loss"] + r["keep_routing/margin"] + r["keep_routing/kl"], rel=1e-5)


def test_cache_and_reference_give_the_same_terms(adapter_run, tmp_path):
    """The original routing from the prepare-time cache or from ctx.reference() each step: same loss."""
    for source in ("cache", "reference"):
        adapter_run(source, "adapters=[keep_routing]", f"keep_routing.original={source}", "train.max_steps=3")
    cached, recomputed = _log(tmp_path / "cache"), _log(tmp_path / "reference")
    for a, b in zip(cached, recomputed, strict=True):
        for key in ("keep_routing/margin", "keep_routing/kl", "loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6)


def test_layers_out_of_range_is_a_user_error(adapter_run):
    with pytest.raises(UserError, match="'keep_routing.layers' names MoE layer 9"):
        adapter_run("bad", "adapters=[keep_routing]", "keep_routing.layers=[0,9]")


def test_grip_consistency_is_keep_routings_margin_term(adapter_run, tmp_path):
    """The deprecated grip.consistency runs keep_routing's code: the same numbers, step by step."""
    with pytest.warns(FutureWarning, match="'grip.consistency' is deprecated"):
        adapter_run("alias", "adapters=[grip]", "grip.mode=project", "grip.consistency=3", "train.max_steps=3",
                    method="ga")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        adapter_run("new", "adapters=[grip,keep_routing]", "grip.mode=project", "keep_routing.loss=margin",
                    "keep_routing.weight=3", "keep_routing.roles=[retain]", "keep_routing.batch_size=null",
                    "train.max_steps=3", method="ga")
    alias, new = _log(tmp_path / "alias"), _log(tmp_path / "new")
    assert [r["grip/consistency"] for r in alias] == [r["keep_routing/margin"] for r in new]
    assert [r["loss"] for r in alias] == [r["loss"] for r in new]
    assert all(math.isfinite(r["grip/consistency"]) and r["grip/consistency"] > 0 for r in alias)
    with pytest.raises(UserError, match="adapters 'grip' and 'keep_routing' cannot be combined"):
        adapter_run("both", "adapters=[grip,keep_routing]", "grip.mode=project", "grip.consistency=3")
