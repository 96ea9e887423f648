"""GRIP's bounded preparation: streamed passes, chunked eigh, cached PTC targets, memory accounting."""

from __future__ import annotations

import pytest
import torch

from moe_unlearn.adapters import nullspace
from moe_unlearn.adapters.grip import Grip, GripConfig, router_features, router_rows
from moe_unlearn.adapters.routing_io import layer_inputs, run
from moe_unlearn.core.trainable import split_refs
from moe_unlearn.models.routing import capture_routing
from moe_unlearn.models.selectors import select_parameters
from moe_unlearn.models.tiny import tiny_model
from tests.adapters.conftest import random_batches, span_projector


def _one_shot(model, layers, batches, rel_energy: float) -> tuple[list[nullspace.SpanBases], list[torch.Tensor]]:
    """The pre-streaming preparation: every layer's inputs of the whole cache at once, one eigh per layer."""
    with torch.no_grad(), capture_routing(model, router_inputs=True) as cap:
        for batch in batches:
            run(model, batch)
    bases, scores = [], []
    for layer in layers:
        x = router_features(layer, cap.layers[layer.index].inputs)
        sel = torch.zeros(x.shape[0], layer.num_experts, dtype=torch.bool)
        sel.scatter_(1, cap.layers[layer.index].indices, True)
        gram = torch.zeros(layer.num_experts, x.shape[1], x.shape[1], dtype=torch.float64)
        nullspace.accumulate_gram(gram, x, sel)
        bases.append(nullspace.span_bases(gram, rel_energy=rel_energy, max_rank=None, dtype=torch.float32))
        scores.append((x @ router_rows(layer).T).float())
    return bases, scores


@pytest.mark.parametrize("arch", ["mixtral", "gpt_oss"])
def test_streamed_preparation_gives_the_one_shot_bases_and_targets(arch, fake_ctx):
    retain = random_batches(5, seed=1)
    model = tiny_model(arch, seed=0)
    ctx = fake_ctx(model, retain=retain)
    ref_bases, ref_scores = _one_shot(model, ctx.layers, retain[:3], rel_energy=1e-3)
    # one tiny layer's Gram stack is 8 x 65 x 65 float64 = 0.26 MiB: 1 MiB holds both, 0.3 MiB one
    for budget, passes in ((1, 1), (0.3, 2)):
        grip = Grip(GripConfig(mode="project+ptc", cache_tokens=100, eigh_chunk=3, margins=True,
                               ptc_check_batches=1, prep_gram_mib=budget, prep_gram="stack"))
        grip.prepare(ctx)
        assert grip.prep_passes == passes
        assert len(grip.cache) == 3  # 100 tokens need 3 of the batches
        for k, (state, ref, scores) in enumerate(zip(grip.layers, ref_bases, ref_scores)):
            assert torch.equal(state.bases.rank, ref.rank)
            assert torch.allclose(span_projector(grip.layer_bases(k)), span_projector(ref), atol=1e-6)
            assert torch.allclose(grip.targets[state.index], scores, atol=1e-6)
            assert torch.equal(state.margin_x, router_features(ctx.layers[state.index], _inputs(model, ctx, state)))


def _inputs(model, ctx, state) -> torch.Tensor:
    with torch.no_grad(), capture_routing(model, router_inputs=True) as cap:
        for batch in random_batches(5, seed=1)[:3]:
            run(model, batch)
    return cap.layers[state.index].inputs


def test_layer_inputs_stop_after_the_last_listed_layer():
    model = tiny_model("mixtral", seed=0)
    from moe_unlearn.models.layout import moe_layers

    layers = moe_layers(model)
    batch = random_batches(1, seed=3)[0]
    called = []
    handle = model.lm_head.register_forward_hook(lambda *a: called.append(1))
    got = layer_inputs(model, layers[:1], batch)
    assert not called  # the forward never reached the head
    handle.remove()
    with torch.no_grad(), capture_routing(model, router_inputs=True) as cap:
        run(model, batch)
    assert list(got) == [0]
    assert torch.equal(got[0][0], cap.layers[0].inputs) and torch.equal(got[0][1], cap.layers[0].indices)


def _synthetic_gram(experts: int, d: int, seed: int) -> torch.Tensor:
    """Gram stack of Gaussian inputs whose spectrum decays by 10^4 (like the geometry bench)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2000, d, generator=g, dtype=torch.float64) * torch.pow(10.0, -2.0 * torch.arange(d) / d)
    sel = torch.rand(2000, experts, generator=g) < 0.3
    gram = torch.zeros(experts, d, d, dtype=torch.float64)
    nullspace.accumulate_gram(gram, x.float(), sel)
    return gram


def test_chunked_eigh_equals_unchunked_and_float32_is_close_at_the_default_threshold():
    gram = _synthetic_gram(7, 48, 0)
    full = nullspace.span_bases(gram, rel_energy=1e-3, max_rank=None, dtype=torch.float32)
    for chunk in (1, 3, 7):
        part = nullspace.span_bases(gram, rel_energy=1e-3, max_rank=None, dtype=torch.float32, chunk=chunk)
        assert part.basis.shape == full.basis.shape and torch.equal(part.rank, full.rank)
        assert torch.allclose(span_projector(part), span_projector(full), atol=1e-6)
        assert torch.allclose(part.energy, full.energy)
    f32 = nullspace.span_bases(gram, rel_energy=1e-3, max_rank=None, dtype=torch.float32, chunk=3, eigh_dtype=torch.float32)
    assert torch.equal(f32.rank, full.rank)
    # what matters: an update projected with the float32 bases barely touches the protected span
    delta = torch.randn(7, 48, generator=torch.Generator().manual_seed(1))
    leak = torch.bmm(span_projector(full).float(), f32.project(delta)[:, :, None]).norm()
    assert leak < 1e-4 * delta.norm()


def test_energy_share_and_bf16_bases():
    gram = _synthetic_gram(4, 32, 2)
    full = nullspace.span_bases(gram, rel_energy=0.0, max_rank=None, dtype=torch.float32)
    capped = nullspace.span_bases(gram, rel_energy=0.0, max_rank=4, dtype=torch.float32)
    assert torch.allclose(full.energy, torch.ones(4), atol=1e-6)
    # share of the trace inside the kept span, computed from the bases themselves
    inside = torch.einsum("edr,edf,efr->e", capped.basis.double(), gram, capped.basis.double())
    trace = gram.diagonal(dim1=1, dim2=2).sum(1)
    assert torch.allclose(capped.energy.double(), inside / trace, atol=1e-5)
    assert (capped.energy < 0.9).all()  # 4 of 32 directions of a slowly decaying spectrum
    bf16 = nullspace.span_bases(gram, rel_energy=1e-3, max_rank=None, dtype=torch.bfloat16)
    f32 = nullspace.span_bases(gram, rel_energy=1e-3, max_rank=None, dtype=torch.float32)
    assert bf16.nbytes * 2 == f32.nbytes
    delta = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    out = bf16.project(delta)
    assert out.dtype == torch.float32
    leak = torch.bmm(span_projector(f32).float(), out[:, :, None]).norm() / delta.norm()
    assert 1e-5 < leak < 2e-2  # bf16 rounding: the equality constraints hold only to ~1e-2


def _drift_upstream(model) -> None:
    """Move every non-router weight a little, so the routers' inputs drift (the PTC situation)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gate" not in name and "router" not in name and p.dim() == 2:
                p.add_(0.05 * p.std() * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("arch", ["mixtral", "gpt_oss"])
def test_ptc_with_cached_scores_matches_the_refit_on_recaptured_inputs(arch, fake_ctx):
    retain = random_batches(4, seed=1)
    model = tiny_model(arch, seed=0)
    ctx = fake_ctx(model, retain=retain)
    cfg = GripConfig(mode="ptc", cache_tokens=10_000, ptc_check_batches=1, ptc_min_cos=-1, ptc_nll_tolerance=1e9)
    grip = Grip(cfg)
    grip.prepare(ctx)
    assert grip.layers == []  # ptc alone builds no projectors
    _, ref_scores = _one_shot(model, ctx.layers, grip.cache, rel_energy=1e-3)
    _drift_upstream(model)
    reference = tiny_model(arch, seed=0)
    reference.load_state_dict(model.state_dict())
    report = grip.refit_routers(ctx)
    assert all(entry["accepted"] for entry in report)
    # the reference refit: old scores of the ORIGINAL model, inputs re-captured whole, forward order
    ref_layers = fake_ctx(reference, retain=retain).layers
    for layer, scores in zip(ref_layers, ref_scores):
        with torch.no_grad(), capture_routing(reference, router_inputs=True) as cap:
            for batch in grip.cache:
                run(reference, batch)
        stats = nullspace.RidgeStats(router_rows(layer).shape[1], layer.num_experts, torch.device("cpu"))
        stats.add(router_features(layer, cap.layers[layer.index].inputs), scores)
        refit, cos = stats.solve(router_rows(layer), cfg.ptc_lambda)
        with torch.no_grad():
            layer.router_weight.copy_(refit[:, : layer.router_weight.shape[1]])
            if layer.router_bias is not None:
                layer.router_bias.copy_(refit[:, -1])
        assert abs(report[layer.index]["cos"] - round(cos, 5)) <= 1e-5
    for mine, ref in zip(ctx.layers, ref_layers):
        assert torch.allclose(router_rows(mine), router_rows(ref), atol=1e-5)


def test_summary_reports_cache_and_projector_bytes(fake_ctx):
    retain = random_batches(4, seed=1)
    model = tiny_model("gpt_oss", seed=0)  # routers with bias: d' = 65
    ctx = fake_ctx(model, retain=retain)
    ctx.trainable = split_refs(select_parameters(model, [f"regex:{ctx.layers[1].router_name}\\."]))  # layer 1's router
    base = dict(mode="project+ptc", cache_tokens=10_000, ptc_check_batches=1, margins=True)
    grip = Grip(GripConfig(**base, protect="trainable", basis_dtype="bfloat16"))
    grip.prepare(ctx)
    info = grip.summary()
    tokens = info["cache_tokens"]
    experts = ctx.layers[0].num_experts
    assert info["protected_layers"] == [1]
    assert info["ptc_target_bytes"] == 2 * tokens * experts * 4  # both layers' old scores, float32
    assert info["margin_cache_bytes"] == tokens * 65 * 4 + tokens * experts * 4  # layer 1 only
    r = grip.layers[0].bases.basis.shape[2]
    assert info["projector_bytes"] == experts * 65 * r * 2
    assert len(info["protected_energy"]) == 1 and all(0.99 <= e <= 1 for e in info["protected_energy"][0])
    full = Grip(GripConfig(**base))
    full.prepare(ctx)
    assert full.summary()["protected_layers"] == [0, 1]
    assert full.summary()["margin_cache_bytes"] == 2 * info["margin_cache_bytes"]
