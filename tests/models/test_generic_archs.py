"""Other transformers MoE classes work with no per-architecture code (common-pattern check)."""

import pytest
import torch

from moe_unlearn.models import capture_routing, mask_experts, moe_layers, replay_routing
from moe_unlearn.models.tiny import GENERIC_ARCHS, tiny_model

from .helpers import actual_selections, padded_batch, zero_expert


@pytest.mark.parametrize("arch", GENERIC_ARCHS)
def test_common_pattern(arch):
    ids, mask = padded_batch(batch=2, seq=8)
    model = tiny_model(arch)
    layers = moe_layers(model)
    assert layers and all((layer.num_experts, layer.top_k) == (8, 2) for layer in layers)
    keep = mask.reshape(-1).bool()
    with torch.no_grad():
        with capture_routing(model) as cap:
            used = actual_selections(model, layers, lambda: model(input_ids=ids, attention_mask=mask))
        for i in range(len(layers)):
            assert torch.equal(cap.layers[i].indices.sort(-1).values, used[i][0][keep].sort(-1).values)
            assert int(cap.counts(i).sum()) == int(mask.sum()) * 2
        logits = model(input_ids=ids, attention_mask=mask).logits
        with replay_routing(model, cap):
            assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, logits, atol=1e-5)
        with mask_experts(model, {0: [1]}):
            masked = model(input_ids=ids, attention_mask=mask).logits
        zero_expert(layers[0], 1)
        assert torch.allclose(masked, model(input_ids=ids, attention_mask=mask).logits, atol=1e-4)
