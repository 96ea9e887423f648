"""Routing capture, replay and masking on every tiny architecture (checked independently)."""

import pytest
import torch

from moe_unlearn.errors import UserError
from moe_unlearn.models import TINY_ARCHS, capture_routing, mask_experts, moe_layers, replay_routing, tiny_model

from .helpers import actual_selections, padded_batch, zero_expert


@pytest.fixture(scope="module")
def batch():
    return padded_batch()


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_capture_equals_what_the_experts_used(arch, batch):
    ids, mask = batch
    model = tiny_model(arch)
    layers = moe_layers(model)
    keep = mask.reshape(-1).bool()
    with torch.no_grad():
        with capture_routing(model, router_inputs=True) as cap:
            used = actual_selections(model, layers, lambda: model(input_ids=ids, attention_mask=mask))
        ref = model(input_ids=ids, attention_mask=mask, output_router_logits=True)
    assert cap.tokens == int(mask.sum()) == 19 and len(cap.calls) == 1
    for i, layer in enumerate(layers):
        got = cap.layers[i]
        assert got.indices.shape == (19, 2) and got.indices.dtype == torch.long
        assert torch.equal(got.indices.sort(-1).values, used[i][0][keep].sort(-1).values)
        assert torch.allclose(got.logits, ref.router_logits[i][keep])
        assert got.weights.shape == (19, 2) and got.inputs.shape == (19, 64)
        assert torch.equal(cap.counts(i), torch.bincount(used[i][0][keep].reshape(-1), minlength=8))
        assert int(cap.counts(i).sum()) == 19 * 2


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_replay_own_capture_reproduces_logits_and_forces_foreign_routing(arch, batch):
    ids, mask = batch
    model, other = tiny_model(arch), tiny_model(arch, seed=1)
    with torch.no_grad():
        with capture_routing(model) as cap:
            logits = model(input_ids=ids, attention_mask=mask).logits
        with replay_routing(model, cap):
            replayed = model(input_ids=ids, attention_mask=mask).logits
        own = other(input_ids=ids, attention_mask=mask).logits
        with replay_routing(other, cap), capture_routing(other) as forced:
            foreign = other(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(replayed, logits, atol=1e-6)
    for i in range(len(cap.layers)):  # the other model really ran on the captured routing
        assert torch.equal(forced.layers[i].indices, cap.layers[i].indices)
        assert torch.allclose(forced.layers[i].weights, cap.layers[i].weights)
    assert not torch.allclose(foreign, own, atol=1e-4)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_masking_an_expert_equals_zeroing_it(arch, batch):
    ids, mask = batch
    model, zeroed = tiny_model(arch), tiny_model(arch)
    layers = moe_layers(zeroed)
    zero_expert(layers[0], 2)
    zero_expert(layers[1], 5)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        with mask_experts(model, {0: [2], 1: [5]}), capture_routing(model) as cap:
            masked = model(input_ids=ids, attention_mask=mask).logits
        expected = zeroed(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(masked, expected, atol=1e-5)
    assert not torch.allclose(masked, plain, atol=1e-4)
    hit = cap.layers[0].indices == 2  # the capture records the weights actually used
    assert hit.any() and torch.all(cap.layers[0].weights[hit] == 0)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_padding_excluded_and_rows_in_batch_order(arch, batch):
    ids, mask = batch
    model = tiny_model(arch)
    with torch.no_grad(), capture_routing(model) as cap:
        model(input_ids=ids, attention_mask=mask)
        for row in range(ids.shape[0]):  # each row alone, without padding: calls 1..3
            n = int(mask[row].sum())
            model(input_ids=ids[row : row + 1, :n])
    assert len(cap.calls) == 4 and cap.tokens == 2 * 19
    for layer in range(2):
        alone = torch.cat([cap.call_routing(c, layer).indices for c in (1, 2, 3)])
        assert torch.equal(cap.call_routing(0, layer).indices.sort(-1).values, alone.sort(-1).values)
        sel = cap.selections(0, layer)
        assert sel.shape == (3, 10, 2)
        assert torch.all(sel[mask == 0] == -1) and torch.equal(sel[mask == 1], cap.call_routing(0, layer).indices)
    assert torch.equal(cap.token_mask(0), mask.bool())
    assert torch.equal(cap.layers[0].indices, torch.cat([cap.call_routing(c, 0).indices for c in range(4)]))


def test_gradient_checkpointing_does_not_double_count(batch):
    ids, mask = batch
    model = tiny_model("olmoe")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    layers = moe_layers(model)
    fired = []
    handle = layers[0].experts.register_forward_pre_hook(lambda m, a: fired.append(1))
    try:
        with capture_routing(model) as cap:
            out = model(input_ids=ids, attention_mask=mask)
            out.logits.sum().backward()
        with torch.no_grad(), capture_routing(model) as ref:
            model(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    assert len(fired) == 3  # forward, recomputation in backward, reference forward
    assert len(cap.calls) == 1 and cap.tokens == 19
    assert all(int(cap.counts(i).sum()) == 19 * 2 for i in range(2))
    assert torch.equal(cap.layers[0].indices, ref.layers[0].indices)


def test_replay_under_gradient_checkpointing_gives_the_same_gradients(batch):
    ids, mask = batch
    grads = []
    for replay in (False, True):
        model = tiny_model("qwen3_moe")
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        with torch.no_grad(), capture_routing(model) as cap:
            model(input_ids=ids, attention_mask=mask)
        if replay:
            with replay_routing(model, cap):
                model(input_ids=ids, attention_mask=mask).logits.pow(2).mean().backward()
        else:
            model(input_ids=ids, attention_mask=mask).logits.pow(2).mean().backward()
        grads.append(moe_layers(model)[1].experts.down_proj.grad.clone())
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("arch", ["olmoe", "gpt_oss", "llama4_text"])
def test_keep_grad_reaches_router_weights(arch, batch):
    ids, mask = batch
    model = tiny_model(arch)
    layers = moe_layers(model)
    with capture_routing(model, keep_grad=True, router_inputs=True) as cap:
        model(input_ids=ids, attention_mask=mask)
    loss = sum(cap.layers[i].logits.pow(2).mean() + cap.layers[i].weights.sum() for i in range(2))
    loss.backward()
    assert all(layer.router_weight.grad is not None and layer.router_weight.grad.abs().sum() > 0 for layer in layers)
    with torch.enable_grad(), capture_routing(model) as detached:
        model(input_ids=ids, attention_mask=mask)
    assert not detached.layers[0].logits.requires_grad and not detached.layers[0].weights.requires_grad


def test_hooks_are_removed_after_the_contexts(batch):
    ids, mask = batch
    model = tiny_model("mixtral")
    before = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    with capture_routing(model) as cap, mask_experts(model, {1: [0]}):
        model(input_ids=ids, attention_mask=mask)
    after = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    assert before == after and cap.tokens == 19


def test_user_errors(batch):
    ids, mask = batch
    model = tiny_model("olmoe")
    with pytest.raises(UserError, match="expert\\(s\\) \\[8\\] out of range 0..7"):
        with mask_experts(model, {0: [8]}):
            pass
    with pytest.raises(UserError, match="MoE layer 2 out of range"):
        with mask_experts(model, {2: [0]}):
            pass
    with torch.no_grad(), capture_routing(model) as cap:
        model(input_ids=ids, attention_mask=mask)
    with pytest.raises(UserError, match="same inputs and batching"), torch.no_grad(), replay_routing(model, cap):
        model(input_ids=ids[:2], attention_mask=mask[:2])
    with pytest.raises(UserError, match="layout"), replay_routing(tiny_model("olmoe", num_experts=4), cap):
        pass
