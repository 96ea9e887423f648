"""ctx.joint: the forget and retain batches of a micro-step in ONE model forward, each role reading
exactly what its own forward would give (logits, routing, TRACE's weights, gradients)."""

from __future__ import annotations

import pytest
import torch

from moe_unlearn.core import losses
from moe_unlearn.data.tokenize import to_device
from moe_unlearn.train.engine import Trainer


def forwards(trainer: Trainer, forget: dict, retain: dict, *, joint: bool) -> tuple[dict, int, list[torch.Tensor]]:
    """(ForwardOut by role, model calls, gradients of forget NLL + retain NLL)."""
    ctx = trainer.ctx
    calls = []
    handle = ctx.model.register_forward_hook(lambda *a: calls.append(1))
    ctx.model.zero_grad(set_to_none=True)
    try:
        with ctx.recording() as outs, ctx.joint({"forget": forget, "retain": retain} if joint else {}):
            f = ctx.forward(forget, role="forget")
            r = ctx.forward(retain, role="retain")
            again = ctx.forward(forget, role="forget")
            assert again is f or not joint
        loss = losses.answer_nll(f.lm, forget["labels"]) + losses.answer_nll(r.lm, retain["labels"], r.token_weights)
        loss.backward()
    finally:
        handle.remove()
    grads = [p.grad.clone() for p in ctx.model.parameters() if p.grad is not None]
    return dict(outs), len(calls), grads


@pytest.mark.parametrize("adapter", ["trace", "keep_routing"])
def test_one_forward_serves_both_batches_with_each_roles_own_numbers(run_config, tmp_path, adapter):
    _, cfg = run_config(f"adapters=[{adapter}]", "keep_routing.batch_size=null", "data.retain_batch_size=3")
    trainer = Trainer.create(cfg, tmp_path / "t", progress=False, overwrite=True, eval_routing=False)
    trainer.ctx.model.train()
    forget, retain = (to_device(b, trainer.ctx.device) for b in trainer.pairs.batch(0))
    assert forget["input_ids"].shape != retain["input_ids"].shape  # rows and, here, lengths differ
    alone, n_alone, g_alone = forwards(trainer, forget, retain, joint=False)
    shared, n_shared, g_shared = forwards(trainer, forget, retain, joint=True)
    assert (n_alone, n_shared) == (3, 1)
    for role, batch in (("forget", forget), ("retain", retain)):
        a, s = alone[role], shared[role]
        assert s.batch is batch and s.lm.shape == tuple(batch["input_ids"].shape)
        index = torch.arange(a.lm.shape[0] * a.lm.shape[1])
        torch.testing.assert_close(s.lm.rows(index), a.lm.rows(index), rtol=1e-5, atol=1e-5)
        captured = adapter == "keep_routing" or role == "retain"  # TRACE reads the retain routing only
        assert (a.routing is not None, s.routing is not None) == (captured, captured)
        if captured:
            assert len(s.routing.layers) == len(a.routing.layers)
            for la, ls in zip(a.routing.layers, s.routing.layers):
                assert torch.equal(la.indices, ls.indices)
                torch.testing.assert_close(ls.logits, la.logits, rtol=1e-5, atol=1e-5)
                assert ls.logits.requires_grad == la.logits.requires_grad
            assert torch.equal(s.routing.token_mask(0), a.routing.token_mask(0))
        if role == "retain" and adapter == "trace":
            assert a.token_weights is not None
            torch.testing.assert_close(s.token_weights, a.token_weights)
    assert len(g_alone) == len(g_shared)
    for x, y in zip(g_alone, g_shared):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6)


def test_the_engine_runs_one_forward_per_micro_step_only_where_the_method_allows(run_config, tmp_path):
    """GradDiff shares it; RMU reads a decoder layer's output through a hook, so it keeps two."""
    for method, expected in (("graddiff", 1), ("rmu", 2)):
        _, cfg = run_config(method=method)
        trainer = Trainer.create(cfg, tmp_path / method, progress=False, overwrite=True, eval_routing=False)
        trainer.ctx.model.train()
        calls = []
        # at the start of each forward: RMU's end at its layer (ctx.forward's `until`)
        handle = trainer.ctx.model.register_forward_pre_hook(lambda m, a, k: calls.append(torch.is_grad_enabled()),
                                                             with_kwargs=True)
        trainer.step()
        handle.remove()
        assert sum(calls) == expected, method  # forwards with a graph (RMU's reference one has none)


def test_a_forward_without_gradients_is_not_served_by_the_joint_one(run_config, tmp_path):
    """A no-grad forward of a joint batch (e.g. a method scoring it first) runs on its own and
    does not stand in for the training forward that follows."""
    _, cfg = run_config()
    trainer = Trainer.create(cfg, tmp_path / "t", progress=False, overwrite=True, eval_routing=False)
    ctx = trainer.ctx
    forget, retain = (to_device(b, ctx.device) for b in trainer.pairs.batch(0))
    with ctx.joint({"forget": forget, "retain": retain}):
        with torch.no_grad():
            scored = ctx.forward(forget, role="forget")
        trained = ctx.forward(forget, role="forget")
        assert ctx.forward(retain, role="retain") is not None
    index = torch.arange(forget["input_ids"].numel())
    assert not scored.lm.rows(index).requires_grad and trained.lm.rows(index).requires_grad


def test_a_kl_retain_loss_keeps_separate_forwards(run_config, tmp_path):
    """Its reference forward runs the retain batch alone; the trained one must match it bit for bit
    at the start (KL exactly 0 there), so the engine does not join the forwards."""
    _, plain = run_config(method="graddiff")
    _, kl = run_config("graddiff.retain_loss=kl", method="graddiff")
    joint = [Trainer.create(c, tmp_path / str(i), progress=False, overwrite=True, eval_routing=False).joint_forward
             for i, c in enumerate((plain, kl))]
    assert joint == [True, False]
