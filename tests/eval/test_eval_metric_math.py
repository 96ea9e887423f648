"""Each metric's arithmetic against values computed by hand on small inputs."""

from __future__ import annotations

import math
import zlib
from types import SimpleNamespace

import pytest
import torch

from moe_unlearn.eval import METRICS
from moe_unlearn.eval.generation import rouge_l
from moe_unlearn.eval.knowledge import answer_nll, answer_prob, mc_correct, token_accuracy
from moe_unlearn.eval.privacy import mia_scores, muse_auc, privleak
from moe_unlearn.eval.routing import activation_frequency, stability_per_layer, topk_overlap
from moe_unlearn.eval.scores import TokenStats, lowest_fraction_means, padded, row_means, token_stats
from moe_unlearn.eval.tofu import forget_quality_pvalue, harmonic_mean, truth_ratio_values
from moe_unlearn.core.losses import sequence_nll


def test_topk_overlap_by_hand():
    orig = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    new = torch.tensor([[1, 0], [2, 7], [1, 0], [7, 3]])
    assert topk_overlap(orig, new).tolist() == [1.0, 0.5, 0.0, 0.5]


def test_stability_per_layer_and_mean():
    layer = lambda idx: SimpleNamespace(indices=torch.tensor(idx))  # noqa: E731
    orig = SimpleNamespace(layers=[layer([[0, 1], [2, 3]]), layer([[0, 1], [2, 3]])])
    new = SimpleNamespace(layers=[layer([[0, 1], [2, 3]]), layer([[0, 5], [4, 5]])])
    s = stability_per_layer(orig, new)  # [L, T]
    assert s.tolist() == [[1.0, 1.0], [0.5, 0.0]]
    assert float(s.mean()) == pytest.approx(0.625)  # (1 + 1 + 0.5 + 0) / 4


def test_activation_frequency_sums_to_k():
    f = activation_frequency(torch.tensor([[0, 1], [0, 2], [3, 0]]), 5)
    assert f.tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3, 0.0])
    assert float(f.sum()) == pytest.approx(2.0)


def test_auc_against_hand_count():
    members, non = [0.9, 0.4, 0.7], [0.5, 0.1]
    # pairs (member > non): 0.9>0.5, 0.9>0.1, 0.4>0.1, 0.7>0.5, 0.7>0.1 -> 5 of 6
    assert muse_auc(members, non) == pytest.approx(1 / 6)  # MUSE: forget labelled 0, holdout 1
    assert muse_auc([1.0, 2.0], [1.0, 0.0]) == pytest.approx(0.5 / 4)  # a tie counts half
    assert privleak(0.6, 0.5) == pytest.approx(20.0)
    assert privleak(0.5, 0.5) == 0.0


def _two_token_logits(p_label: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocab {0, 1}; the label is always 1 and the model gives it probability p at each step."""
    n = len(p_label)
    logits = torch.zeros(1, n + 1, 2)
    for t, p in enumerate(p_label):
        logits[0, t] = torch.tensor([math.log(1 - p), math.log(p)])
    labels = torch.ones(1, n + 1, dtype=torch.long)
    labels[0, 0] = -100
    return logits, labels


def test_token_stats_min_k_and_min_k_plus_plus_by_hand():
    ps = [0.7, 0.9, 0.2, 0.6]  # (p = 0.5 would give sigma = 0 with two tokens)
    logits, labels = _two_token_logits(ps)
    st = token_stats(logits, labels, moments=True)
    assert st.logp[0].tolist() == pytest.approx([math.log(p) for p in ps], abs=1e-6)
    scores = mia_scores(st, ["text"], 0.5)
    # k = 0.5 of 4 tokens -> the two lowest: log 0.2 and log 0.6
    assert scores["mink"][0] == pytest.approx((math.log(0.2) + math.log(0.6)) / 2, abs=1e-6)
    assert scores["loss"][0] == pytest.approx(sum(math.log(p) for p in ps) / 4, abs=1e-6)
    z = []
    for p in ps:
        mu = p * math.log(p) + (1 - p) * math.log(1 - p)
        sigma = math.sqrt(p * math.log(p) ** 2 + (1 - p) * math.log(1 - p) ** 2 - mu**2)
        z.append((math.log(p) - mu) / sigma)
    expected = sum(sorted(z)[:2]) / 2
    assert scores["minkpp"][0] == pytest.approx(expected, abs=1e-5)
    # argmax hits: p > 0.5 only
    assert st.correct[0].tolist() == [True, True, False, True]


def test_lowest_fraction_keeps_at_least_one_and_an_empty_row_is_nan():
    values, n = padded([torch.tensor([3.0, 1.0, 2.0]), torch.tensor([5.0]), torch.tensor([])])
    low = lowest_fraction_means(values, n, 0.1)
    assert low[:2].tolist() == [1.0, 5.0] and math.isnan(low[2])
    assert lowest_fraction_means(values, n, 1.0)[:2].tolist() == pytest.approx([2.0, 5.0])
    assert math.isnan(row_means(values, n)[2])


def test_batched_scores_equal_the_per_example_definitions():
    """The padded computation gives each example's own mean / lowest-k mean (ragged rows, k whose
    k * n is fractional, ties, and a row shorter than 1 / k)."""
    torch.manual_seed(0)
    rows = [torch.randn(int(m)) for m in torch.randint(1, 40, (25,))] + [torch.tensor([-1.0, -1.0, 0.5])]
    values, n = padded(rows)
    for k in (0.1, 0.2, 0.4, 0.7, 1.0):
        got = lowest_fraction_means(values, n, k)
        for row, g in zip(rows, got):
            m = max(1, int(row.numel() * k))
            assert float(g) == pytest.approx(float(row.sort().values[:m].mean()), rel=1e-6, abs=1e-6)
    assert row_means(values, n).tolist() == pytest.approx([float(r.mean()) for r in rows], rel=1e-6, abs=1e-6)


def test_zlib_score_by_hand():
    text = "hello hello hello"
    st = TokenStats(logp=[torch.tensor([-1.0, -3.0])], mu=[torch.zeros(2)], sigma=[torch.ones(2)])
    assert mia_scores(st, [text], 0.4)["zlib"][0] == pytest.approx(-2.0 / len(zlib.compress(text.encode())))


def test_answer_metrics_match_sequence_nll():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 2, -100, -100]])
    st = token_stats(logits, labels)
    nll_sum, count = sequence_nll(logits, labels)
    assert answer_nll(st) == pytest.approx((nll_sum / count).tolist(), abs=1e-5)
    assert answer_prob(st) == pytest.approx((-(nll_sum / count)).exp().tolist(), abs=1e-5)
    hits = logits[:, :-1].argmax(-1) == labels[:, 1:]
    assert token_accuracy(st) == pytest.approx([float(hits[0, 1:].float().mean()), float(hits[1, :1].float().mean())])


def test_answer_metrics_hand_values():
    st = TokenStats(logp=[torch.tensor([math.log(0.5), math.log(0.125)])], correct=[torch.tensor([True, False])])
    assert answer_nll(st) == pytest.approx([(math.log(2) + math.log(8)) / 2])
    assert answer_prob(st) == pytest.approx([0.25])  # geometric mean of 0.5 and 0.125
    assert token_accuracy(st) == [0.5]


def test_mc_correct_and_ties():
    ll = [torch.tensor([-3.0, -1.0, -2.0, -4.0]), torch.tensor([-1.0, -1.0, -5.0, -5.0])]
    assert mc_correct(ll, [1, 1]) == [1.0, 0.0]  # tie -> first index


def test_rouge_l_two_strings():
    # LCS of 6-word strings = "the cat on the mat" (5): P = R = 5/6
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    assert rouge_l("abc", "xyz") == 0.0
    assert rouge_l("Paris", "paris") == 1.0


def test_truth_ratio_ks_and_harmonic_mean():
    r = truth_ratio_values(torch.tensor([-1.0, -0.5]), [torch.tensor([-2.0, -3.0]), torch.tensor([-0.5])])
    assert r == pytest.approx([math.exp(-1.5), 1.0])
    # disjoint samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1
    assert forget_quality_pvalue([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert forget_quality_pvalue([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.7, 0.0]) == 0.0


def test_every_metric_declares_direction_and_scope():
    assert {"nll", "mc_acc", "stability", "replay", "privacy", "relearn", "lm_eval"} <= set(METRICS.names())
    for name in METRICS.names():
        m = METRICS.get(name)
        assert isinstance(m.higher_is_better, bool) and m.scope in ("split", "global") and m.description
