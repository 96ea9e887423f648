"""GRIP's linear algebra on synthetic data: projection, margins, ridge refit."""

import pytest
import torch

from moe_unlearn.adapters.nullspace import (
    RidgeStats,
    SpanBases,
    WidthBuckets,
    accumulate_gram,
    augment,
    kaczmarz_margins,
    span_bases,
    span_bases_from_inputs,
)


def _low_rank_inputs(t: int, d: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, rank, generator=g) @ torch.randn(rank, d, generator=g)


def test_projected_update_leaves_selected_scores_unchanged():
    e, d, t = 4, 16, 300
    x = _low_rank_inputs(t, d, 10, 0)  # span of rank 10 < d: a 6-dim null space per row
    g = torch.Generator().manual_seed(1)
    selected = torch.rand(t, e, generator=g) < 0.4
    gram = torch.zeros(e, d, d, dtype=torch.float64)
    accumulate_gram(gram[:, :, :], x[:150], selected[:150])  # streaming: two chunks
    accumulate_gram(gram, x[150:], selected[150:])
    bases = span_bases(gram, rel_energy=1e-9, max_rank=None, dtype=torch.float32)
    assert bases.rank.tolist() == [10] * e and bases.null_dim.tolist() == [6] * e
    dw = torch.randn(e, d, generator=g)
    pdw = bases.project(dw)
    scores = x @ pdw.T  # [T, E]
    assert scores[selected].abs().max() < 1e-4  # P(dW) x = 0 for every x that selected the row
    assert (pdw - dw).norm() < dw.norm()  # but the update is not frozen
    assert pdw.norm() > 0.3 * dw.norm()
    # idempotent
    assert torch.allclose(bases.project(pdw), pdw, atol=1e-5)


def test_a_wide_span_is_stored_as_its_complement_with_the_same_projection():
    e, d = 3, 12
    x = _low_rank_inputs(400, d, 9, 7)  # rank 9 > d / 2: the 3-dim complement is stored
    selected = torch.ones(400, e, dtype=torch.bool)
    selected[:, 1] = False  # an unconstrained row stays narrow (rank 0)
    gram = torch.zeros(e, d, d, dtype=torch.float64)
    accumulate_gram(gram, x, selected)
    bases = span_bases(gram, rel_energy=1e-9, max_rank=None, dtype=torch.float32)
    assert bases.rank.tolist() == [9, 0, 9] and bases.complement.tolist() == [True, False, True]
    assert bases.width.tolist() == [3, 0, 3] and bases.basis.shape == (e, d, 3)
    delta = torch.randn(e, d, generator=torch.Generator().manual_seed(8))
    evecs = torch.linalg.eigh(gram[0])[1][:, -9:].float()  # the span itself
    assert torch.allclose(bases.project(delta)[0], delta[0] - evecs @ (evecs.T @ delta[0]), atol=1e-5)
    assert torch.equal(bases.project(delta)[1], delta[1])
    assert (x @ bases.project(delta).T)[:, [0, 2]].abs().max() < 1e-4
    # from the inputs: 9 tokens < d (the dual decomposition) complete the basis by QR
    few = span_bases_from_inputs(x[:9], selected[:9], rel_energy=1e-9, max_rank=None, dtype=torch.float32)
    assert few.complement.tolist() == [True, False, True] and few.width.tolist() == [3, 0, 3]
    assert (x[:9] @ few.project(delta).T)[:, [0, 2]].abs().max() < 1e-4
    assert torch.allclose(few.basis.transpose(1, 2) @ few.basis, torch.diag_embed((few.width[:, None] > torch.arange(3)).float()),
                          atol=1e-5)  # orthonormal columns, zero padding


def test_energy_threshold_and_rank_cap_bound_the_basis():
    d = 8
    scales = torch.tensor([10.0, 5.0, 1.0, 0.1, 0.01, 0, 0, 0])
    x = torch.randn(500, d, generator=torch.Generator().manual_seed(0)) * scales
    gram = torch.zeros(1, d, d, dtype=torch.float64)
    accumulate_gram(gram, x, torch.ones(500, 1, dtype=torch.bool))
    ranks = [int(span_bases(gram, rel_energy=r, max_rank=None, dtype=torch.float32).rank[0])
             for r in (1e-1, 1e-3, 1e-5, 1e-7)]
    assert ranks == [2, 3, 4, 5]
    capped = span_bases(gram, rel_energy=1e-7, max_rank=2, dtype=torch.float32)
    assert int(capped.rank[0]) == 2 and capped.basis.shape == (1, d, 2)
    assert capped.nbytes == 1 * d * 2 * 4
    # a row nobody selected is unconstrained
    empty = span_bases(torch.zeros(1, d, d, dtype=torch.float64), rel_energy=1e-3, max_rank=None, dtype=torch.float32)
    assert int(empty.rank[0]) == 0 and torch.equal(empty.project(torch.ones(1, d)), torch.ones(1, d))


def test_kaczmarz_enforces_margins_inside_the_null_space():
    e, d, t = 3, 12, 400
    g = torch.Generator().manual_seed(2)
    # tokens that select a row come from a rank-4 subspace; the others span everything
    x = augment(torch.cat([_low_rank_inputs(100, d - 1, 4, 3), torch.randn(t - 100, d - 1, generator=g)]))
    selected = torch.rand(t, e, generator=g) < 0.3
    selected[100:] = False
    gram = torch.zeros(e, d, d, dtype=torch.float64)
    accumulate_gram(gram, x, selected)
    bases = span_bases(gram, rel_energy=1e-9, max_rank=None, dtype=torch.float32)
    bound = torch.rand(t, e, generator=g) * 0.5
    bound[selected] = float("inf")
    delta = bases.project(torch.randn(e, d, generator=g))
    before = int(((x @ delta.T) > bound).sum())
    assert before > 20  # the random update does violate many margins
    gen = torch.Generator().manual_seed(0)
    fixed, left = kaczmarz_margins(delta, x, bound, bases, iters=2000, generator=gen, tol=1e-5)
    assert left == 0
    assert ((x @ fixed.T) - bound).max() <= 1e-5
    assert (x @ fixed.T)[selected].abs().max() < 1e-3  # equality constraints still hold
    assert torch.allclose(bases.project(fixed), fixed, atol=1e-5)  # stays in the null space
    assert fixed.norm() > 0  # not simply zeroed
    same, left = kaczmarz_margins(fixed, x, bound + 1e-3, bases, iters=5)
    assert left == 0 and torch.equal(same, fixed)  # a feasible update is left alone


def test_ridge_refit_recovers_old_scores_from_drifted_inputs():
    t, d, e = 500, 10, 4
    g = torch.Generator().manual_seed(4)
    x_old = torch.randn(t, d, generator=g)
    theta = torch.randn(e, d, generator=g)
    target = x_old @ theta.T
    mix = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g)  # upstream drift: x_new = x_old M
    x_new = x_old @ mix
    stats = RidgeStats(d, e, torch.device("cpu"))
    stats.add(x_new[:200], target[:200])
    stats.add(x_new[200:], target[200:])
    current = theta + 0.1 * torch.randn(e, d, generator=g)
    cos_before = torch.nn.functional.cosine_similarity((x_new @ current.T).flatten(), target.flatten(), dim=0)
    refit, cos = stats.solve(current, lam=1e-6)
    assert cos_before < 0.95
    assert cos > 0.9999
    assert torch.allclose(x_new @ refit.T, target, atol=1e-3)
    # the reported cosine is the one of the fitted scores
    direct = torch.nn.functional.cosine_similarity((x_new @ refit.T).flatten(), target.flatten(), dim=0)
    assert abs(float(direct) - cos) < 1e-5


def test_ridge_refit_keeps_the_component_outside_the_fit_span():
    t, d, e = 200, 6, 2
    g = torch.Generator().manual_seed(5)
    x = torch.randn(t, d, generator=g)
    x[:, -1] = 0  # the last input direction never occurs
    stats = RidgeStats(d, e, torch.device("cpu"))
    stats.add(x, torch.zeros(t, e))
    current = torch.randn(e, d, generator=g)
    refit, _ = stats.solve(current, lam=1e-6)
    assert torch.allclose(refit[:, -1], current[:, -1])
    assert refit[:, :-1].abs().max() < 1e-4


def test_margins_fall_back_to_an_exact_backtrack_when_kaczmarz_runs_out():
    e, d, t = 3, 12, 400
    g = torch.Generator().manual_seed(6)
    x = augment(torch.cat([_low_rank_inputs(100, d - 1, 4, 3), torch.randn(t - 100, d - 1, generator=g)]))
    selected = torch.rand(t, e, generator=g) < 0.3
    selected[100:] = False
    gram = torch.zeros(e, d, d, dtype=torch.float64)
    accumulate_gram(gram, x, selected)
    bases = span_bases(gram, rel_energy=1e-9, max_rank=None, dtype=torch.float32)
    bound = torch.rand(t, e, generator=g)
    bound[selected] = float("inf")
    previous = torch.zeros(e, d)  # feasible: the original router
    delta = bases.project(torch.randn(e, d, generator=g))
    fixed, pulled = kaczmarz_margins(delta, x, bound, bases, iters=1, previous=previous)
    assert pulled > 0
    assert ((x @ fixed.T) - bound).max() <= 0
    assert fixed.abs().sum() > 0  # moved part of the way, not reverted
    assert (x @ fixed.T)[selected].abs().max() < 1e-3


def _layer_bases(seed: int, d: int = 16) -> SpanBases:
    """Bases of one layer's 6 rows with mixed widths: a row no token chose (rank 0), narrow spans
    and wide ones (stored as their complements); the ranks shift with the seed."""
    g = torch.Generator().manual_seed(seed)
    ranks = [0] + [(k + seed) % (d - 1) + 1 for k in (1, 4, 7, 10, 13)]
    a = [torch.randn(d, r, generator=g, dtype=torch.float64) for r in ranks]
    gram = torch.stack([m @ m.T for m in a])
    return span_bases(gram, rel_energy=1e-9, max_rank=None, dtype=torch.float32)


def test_width_buckets_give_each_layers_projection_in_fewer_bytes():
    layers = [_layer_bases(seed) for seed in range(3)]
    assert len({int(w) for b in layers for w in b.width}) > 3  # widths to regroup
    assert any(b.complement.any() for b in layers) and all(int(b.width[0]) == 0 for b in layers)
    delta = torch.randn(18, 16, generator=torch.Generator().manual_seed(9))
    expected = torch.cat([b.project(part) for b, part in zip(layers, delta.split(6))])
    padded = sum(b.nbytes for b in layers)
    for buckets in (1, 3, 100):
        stack = WidthBuckets.build(layers, buckets)
        assert len(stack.basis) == min(buckets, 18) and stack.rows == [6, 6, 6]
        assert torch.allclose(stack.project(delta), expected, atol=1e-6)
        for k, b in enumerate(layers):  # each layer's own basis comes back out of the stack
            out = stack.layer_basis(k)
            assert torch.allclose(out @ out.transpose(1, 2), b.basis @ b.basis.transpose(1, 2), atol=1e-6)
        if buckets > 1:  # each bucket padded only to its own widest row
            assert stack.nbytes < padded
    placeholder = layers[0].metadata()
    assert torch.equal(placeholder.width, layers[0].width) and placeholder.nbytes == 0
    with pytest.raises(RuntimeError, match="WidthBuckets"):
        placeholder.project(delta[:6])
