"""GRIP's memory modes: bases from cached inputs (dual Gram), the shared span, bf16 bases with
fp32 arithmetic, offloaded bases; each protects what it promises."""

from __future__ import annotations

import pytest
import torch

from moe_unlearn.adapters import nullspace
from moe_unlearn.adapters.grip import Grip, GripConfig, router_features, router_rows, set_router_rows
from moe_unlearn.adapters.routing_io import layer_inputs
from moe_unlearn.core.trainable import split_refs
from moe_unlearn.models.selectors import select_parameters
from moe_unlearn.models.tiny import tiny_model
from tests.adapters.conftest import random_batches, span_projector


def _inputs(d: int, t: int, experts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with a decaying spectrum and a selection where experts have few / many / no tokens."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, d, generator=g) * torch.pow(10.0, -2.0 * torch.arange(d) / d)
    sel = torch.zeros(t, experts, dtype=torch.bool)
    sel[:, 0] = torch.rand(t, generator=g) < 0.9  # n_e > d: primal
    sel[:, 1] = torch.rand(t, generator=g) < 0.1  # n_e < d: dual
    sel[:5, 2] = True  # 5 tokens
    return x, sel  # expert 3: nobody


@pytest.mark.parametrize("rel_energy, max_rank", [(1e-3, None), (0.0, 4), (1e-6, None)])
def test_bases_from_inputs_equal_the_gram_stack_bases(rel_energy, max_rank):
    x, sel = _inputs(24, 200, 4, 0)
    gram = torch.zeros(4, 24, 24, dtype=torch.float64)
    nullspace.accumulate_gram(gram, x, sel)
    stack = nullspace.span_bases(gram, rel_energy=rel_energy, max_rank=max_rank, dtype=torch.float32)
    inputs = nullspace.span_bases_from_inputs(x, sel, rel_energy=rel_energy, max_rank=max_rank, dtype=torch.float32)
    assert torch.equal(inputs.rank, stack.rank)
    assert inputs.rank[1] < 24 and inputs.rank[3] == 0  # the dual path ran, an unselected row is free
    assert torch.allclose(inputs.energy, stack.energy, atol=1e-6)
    assert torch.allclose(span_projector(inputs), span_projector(stack), atol=1e-5)
    eye = torch.eye(inputs.basis.shape[2]).expand(4, -1, -1) * (torch.arange(inputs.basis.shape[2]) < inputs.width[:, None])[:, None]
    assert torch.allclose(inputs.basis.transpose(1, 2) @ inputs.basis, eye, atol=1e-5)  # orthonormal


def test_shared_basis_projection_keeps_every_score_and_conversions_keep_the_result():
    x, _ = _inputs(16, 300, 3, 1)
    x = x[:, :10] @ torch.randn(10, 16, generator=torch.Generator().manual_seed(2))  # a rank-10 span
    gram = torch.zeros(1, 16, 16, dtype=torch.float64)
    nullspace.accumulate_gram(gram, x, torch.ones(300, 1, dtype=torch.bool))
    shared = nullspace.span_bases(gram, rel_energy=1e-9, max_rank=None, dtype=torch.float32)
    assert int(shared.rank[0]) == 10 and bool(shared.complement[0]) and shared.basis.shape == (1, 16, 6)  # the narrower side
    delta = torch.randn(5, 16, generator=torch.Generator().manual_seed(3))
    out = shared.project(delta)
    assert (x @ out.T).abs().max() < 1e-4 * (x @ delta.T).abs().max()  # every row, every retained token
    assert out.norm() > 0.3 * delta.norm()  # six free directions remain
    # a stack in another dtype is converted chunk by chunk: same result as converting it whole
    stack = torch.randn(5, 16, 4, dtype=torch.float64)
    assert torch.allclose(nullspace.project_rows(delta, stack, chunk=2), nullspace.project_rows(delta, stack.float()),
                          atol=1e-5)


def test_bf16_bases_project_in_fp32_with_a_small_leak():
    x, sel = _inputs(64, 2000, 4, 4)
    gram = torch.zeros(2, 64, 64, dtype=torch.float64)
    nullspace.accumulate_gram(gram, x, sel[:, :2])
    exact = nullspace.span_bases(gram, rel_energy=1e-3, max_rank=None, dtype=torch.float32)
    low = nullspace.span_bases(gram, rel_energy=1e-3, max_rank=None, dtype=torch.bfloat16)
    delta = torch.randn(2, 64, generator=torch.Generator().manual_seed(5))
    out = low.project(delta)
    assert out.dtype == torch.float32
    leak = torch.bmm(span_projector(exact).float(), out[:, :, None]).norm()
    old_leak = torch.bmm(span_projector(exact).float(), (delta - torch.bmm(  # bf16 arithmetic, as before
        low.basis, torch.bmm(delta.bfloat16()[:, None, :], low.basis).transpose(1, 2)).squeeze(-1).float())[:, :, None]).norm()
    assert leak < 2e-2 * delta.norm() and leak < old_leak


def _prepared(cfg: GripConfig, fake_ctx, model=None):
    model = model or tiny_model("mixtral", seed=0)
    ctx = fake_ctx(model, retain=random_batches(5, seed=1))
    grip = Grip(cfg)
    grip.prepare(ctx)
    return grip, ctx


def test_input_preparation_equals_the_gram_stack_in_the_adapter(fake_ctx):
    stack, _ = _prepared(GripConfig(mode="project", cache_tokens=100, prep_gram="stack"), fake_ctx)
    inputs, _ = _prepared(GripConfig(mode="project", cache_tokens=100, prep_gram="inputs"), fake_ctx)
    assert stack.summary()["prep_gram"] == ["stack", "stack"] and inputs.summary()["prep_gram"] == ["inputs", "inputs"]
    for k, (a, b) in enumerate(zip(stack.layers, inputs.layers)):
        assert torch.equal(a.bases.rank, b.bases.rank)
        assert torch.allclose(span_projector(stack.layer_bases(k)), span_projector(inputs.layer_bases(k)), atol=1e-5)
    # auto picks the smaller: 8 x 64^2 float64 (256 KiB) vs ~130 tokens x 64 float32 (~34 KiB)
    auto, _ = _prepared(GripConfig(mode="project", cache_tokens=100), fake_ctx)
    assert auto.summary()["prep_gram"] == ["inputs", "inputs"]


def test_shared_span_keeps_every_retained_logit_after_a_step(fake_ctx):
    grip, ctx = _prepared(GripConfig(mode="project", span="shared", cache_tokens=20, rel_energy=1e-9), fake_ctx)
    info = grip.summary()
    assert info["span"] == "shared" and info["projector_bytes"] == sum(s.bases.basis.numel() * 4 for s in grip.layers)
    assert all(s.bases.basis.shape[0] == 1 for s in grip.layers)
    layer = ctx.layers[0]
    x = router_features(layer, torch.cat([layer_inputs(ctx.model, [layer], b)[0][0] for b in grip.cache]))
    original = router_rows(layer)
    before = x @ original.T
    torch.manual_seed(0)
    set_router_rows(layer, original + 0.1 * torch.randn_like(original))
    grip.after_step(ctx)
    after = x @ router_rows(layer).T
    assert (after - before).abs().max() < 1e-4  # every logit of every retained token, not only the selected ones
    assert (router_rows(layer) - original).abs().max() > 1e-2  # yet the router moved
    assert int(grip.layers[0].bases.rank[0]) < x.shape[1]  # (one batch, fewer tokens than d': routers can move)


def test_offloaded_bases_live_on_the_host_and_give_the_same_projection(fake_ctx):
    plain, ctx = _prepared(GripConfig(mode="project", cache_tokens=60), fake_ctx)
    off, _ = _prepared(GripConfig(mode="project", cache_tokens=60, offload_bases=True), fake_ctx)
    assert all(s.bases.basis.device.type == "cpu" for s in off.layers)
    info = off.summary()
    assert info["projector_device_bytes"] == max(s.bases.nbytes for s in off.layers) < info["projector_bytes"]
    delta = torch.randn(8, plain.layers[0].bases.basis.shape[1])
    assert torch.allclose(off.layers[0].bases.project(delta), plain.layer_bases(0).project(delta))


@pytest.mark.parametrize("trained", ["every router", "layer 1's router"])
def test_routers_projected_together_move_as_layer_by_layer(trained, fake_ctx):
    """project_buckets regroups the trained routers' bases (nullspace.WidthBuckets): the same
    projection as one layer at a time, a router that did not move written back unchanged, and the
    other protected layers still projected one by one."""
    moved = {}
    for buckets in (0, 4):
        model = tiny_model("mixtral", seed=0)
        ctx = fake_ctx(model, retain=random_batches(5, seed=1))
        if trained != "every router":
            ctx.trainable = split_refs(select_parameters(model, [f"regex:{ctx.layers[1].router_name}\\."]))
        grip = Grip(GripConfig(mode="project", cache_tokens=60, project_buckets=buckets))
        grip.prepare(ctx)
        stacked = [s.index for s in grip.stacked]
        assert stacked == ([] if buckets == 0 else [0, 1] if trained == "every router" else [1])
        assert [s.index for s in grip.unstacked] == [i for i in (0, 1) if i not in stacked]
        assert bool(grip.summary()["projector_buckets"]) == (buckets > 0)
        original = [router_rows(layer) for layer in ctx.layers]
        torch.manual_seed(0)
        for step in range(2):  # the second step: only layer 1 moves
            for layer in ctx.layers[step:]:
                set_router_rows(layer, router_rows(layer) + 0.1 * torch.randn_like(router_rows(layer)))
            grip.after_step(ctx)
        moved[buckets] = [router_rows(layer) for layer in ctx.layers]
        assert all((m - o).abs().max() > 1e-2 for m, o in zip(moved[buckets], original))
        for k, state in enumerate(grip.layers):  # every protected row's update is in its null space
            projector = span_projector(grip.layer_bases(k)).float()
            assert (torch.einsum("eij,ej->ei", projector, moved[buckets][state.index] - original[state.index])
                    ).abs().max() < 1e-4
    for a, b in zip(moved[0], moved[4]):
        assert torch.allclose(a, b, atol=1e-6)
