"""RMU steers the OUTPUT of its decoder layer, for every layer, the last one included.

transformers 5 records `hidden_states[-1]` after the final norm, so `hidden_states[layer + 1]`
is not the last layer's output; `models.decoder_layer_output` reads the layer itself.
"""

from __future__ import annotations

import pytest
import torch

from moe_unlearn.models import decoder_layer_output, decoder_layers, tiny_model
from moe_unlearn.methods.rmu import token_mse


def _inputs():
    ids = torch.tensor([[5, 9, 13, 17, 21, 3], [7, 11, 15, 0, 0, 0]])
    return ids, (ids != 0).long()


@pytest.mark.parametrize("arch", ["olmoe", "qwen3_moe", "mixtral"])
def test_decoder_layer_output_is_each_layers_output(arch):
    model = tiny_model(arch, layers=3)
    ids, mask = _inputs()
    n = len(decoder_layers(model))
    assert n == 3
    seen = {}
    with torch.no_grad():
        for i in range(n):
            with decoder_layer_output(model, i) as h:
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            seen[i] = h.value
        # what the final norm receives, taken independently with a pre-hook on it
        norm_in = []
        handle = model.get_decoder().norm.register_forward_pre_hook(lambda m, args: norm_in.append(args[0]))
        model(input_ids=ids, attention_mask=mask)
        handle.remove()
    for i in range(n - 1):
        assert torch.equal(seen[i], out.hidden_states[i + 1])
    assert torch.equal(seen[n - 1], norm_in[0])
    # hidden_states[-1] is the NORMED state: the bug this guards against
    assert not torch.allclose(seen[n - 1], out.hidden_states[-1], atol=1e-3)
    assert torch.allclose(model.get_decoder().norm(seen[n - 1]), out.hidden_states[-1], atol=1e-6)


def test_decoder_layer_output_refuses_a_missing_layer():
    from moe_unlearn.errors import UserError

    with pytest.raises(UserError, match="decoder layer 5 does not exist"):
        with decoder_layer_output(tiny_model("olmoe", layers=2), 5):
            pass


def test_rmu_forget_loss_on_the_last_layer_is_the_layer_output_mse(make_ctx):
    """The forget term at rmu.layer = last equals MSE(layer output, c u) computed from the norm's input."""
    from moe_unlearn.core import losses

    ctx, method = make_ctx("rmu", layer=3, alpha=0.0)  # the tiny benchmark model has 4 decoder layers
    method.prepare(ctx)
    batch = next(ctx.iter_split("forget"))
    norm_in = []
    handle = ctx.model.get_decoder().norm.register_forward_pre_hook(lambda m, args: norm_in.append(args[0]))
    with torch.no_grad():
        out = ctx.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        handle.remove()
        loss = method.loss(ctx, batch, batch).loss
    mask = batch["attention_mask"].bool()
    expected = losses.weighted_token_mean(token_mse(norm_in[0], method.control), mask)
    normed = losses.weighted_token_mean(token_mse(out.hidden_states[-1], method.control), mask)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(normed) - float(expected)) > 1e-3 * float(expected)  # the old (normed) value differs


def test_rmu_forwards_end_at_its_layer_with_the_same_loss_and_gradients(make_ctx, monkeypatch):
    """Nothing past rmu.layer enters RMU's loss, so its forwards (forget, reference, retain) end
    there: the same loss and gradients as whole forwards, bit for bit, and the later layers idle."""
    from moe_unlearn.core import context
    from moe_unlearn.train.engine import build_trainable

    ctx, method = make_ctx("rmu", layer=1)
    method.prepare(ctx)
    ctx.trainable = build_trainable(ctx, method, [], ctx.config.train)
    ctx.trainable.keep_originals()
    with torch.no_grad():  # the trained layers leave the original, so the retain term is not 0
        for p in decoder_layers(ctx.model)[1].parameters():
            p.add_(0.01 * torch.randn_like(p))
    forget, retain = (next(ctx.iter_split(role)) for role in ("forget", "retain"))
    later = []
    decoder_layers(ctx.model)[2].register_forward_hook(lambda m, a, o: later.append(1))

    def loss_and_grads():
        ctx.model.zero_grad(set_to_none=True)
        loss = method.loss(ctx, forget, retain).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in ctx.model.parameters() if p.grad is not None]

    cut, cut_grads = loss_and_grads()
    assert later == [] and cut_grads
    monkeypatch.setattr(context, "runs_whole", lambda model: True)  # as under DDP or a sharding engine
    whole, whole_grads = loss_and_grads()
    assert len(later) == 3  # forget, reference and retain forwards ran to the end
    assert torch.equal(cut, whole) and float(whole) > 0
    assert len(cut_grads) == len(whole_grads) and all(torch.equal(a, b) for a, b in zip(cut_grads, whole_grads))
