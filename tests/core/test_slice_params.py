"""core.slice_params (ZeRO-3's expert slices) on a tiny OLMoE in one process: the forward sees the
slices as rows of the fused tensor while the module's own parameters stay registered, which
ZeRO-3's release (it reads every parameter's ds_id) needs whenever a child module finishes."""

from __future__ import annotations

import torch

from moe_unlearn.core import slice_params
from moe_unlearn.core.trainable import freeze_all_but, select_refs, split_refs
from moe_unlearn.models import tiny_model


def test_a_slice_reaches_the_forward_and_takes_the_gradient_while_its_module_keeps_its_parameters():
    model = tiny_model("olmoe", seed=0)
    ids = torch.randint(0, model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    before = model(input_ids=ids).logits.detach()
    trainable = split_refs(select_refs(model, ["expert:0:3"]))
    freeze_all_but(model, trainable)
    tensors = slice_params.register(model, trainable)
    slice_params.bind(tensors)
    assert {t.attr for t in tensors} == {"gate_up_proj", "down_proj"} and len({id(t.module) for t in tensors}) == 1
    t = tensors[0]
    seen: list[bool] = []
    children = [m for m in t.module.modules() if m is not t.module]
    assert children  # the experts' activation: its release is where ZeRO-3 walks the parameters
    for child in children:
        child.register_forward_hook(lambda m, a, o: seen.append(
            all(isinstance(p, torch.nn.Parameter) for p in t.module._parameters.values())))
    out = model(input_ids=ids).logits
    assert seen and all(seen)
    torch.testing.assert_close(out, before)  # the slice starts as its row: the same model
    out.square().mean().backward()
    key = t.keys[0]
    assert t.module._parameters[key].grad is not None and t.module._parameters[key].grad.abs().sum() > 0
    assert all(x.fused.grad is None for x in tensors)  # frozen: the row trains through the slice's own parameter
    assert not {x.attr for x in tensors} & set(t.module.__dict__)  # after the forward: the parameters again
    with torch.no_grad():
        t.module._parameters[key].add_(1.0)
    changed = model(input_ids=ids).logits.detach()
    assert not torch.allclose(changed, before)  # the forward reads the slice, not the frozen row
