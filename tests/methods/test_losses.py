"""The shared loss arithmetic against hand-computed values."""

import math

import torch
import torch.nn.functional as F

from moe_unlearn.core import losses
from moe_unlearn.methods.dpo import dpo_loss, replace_answers
from moe_unlearn.methods.npo import npo_loss
from moe_unlearn.methods.simnpo import simnpo_loss
from moe_unlearn.methods.undial import undial_target


def _batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 5]])
    return logits, labels


def test_token_ce_is_shifted_and_masked():
    logits, labels = _batch()
    ce = losses.token_ce(logits, labels)
    assert ce.shape == (2, 5)
    expected = -F.log_softmax(logits[0, 1], -1)[3]  # labels[0, 2] is predicted at position 1
    assert torch.allclose(ce[0, 2], expected)
    assert ce[0, 0] == 0 and ce[0, 4] == 0
    nll, count = losses.sequence_nll(logits, labels)
    assert count.tolist() == [2, 4]
    assert torch.allclose(nll[1], ce[1, 1:].sum())


def test_weighted_token_mean_all_ones_equals_plain_mean():
    logits, labels = _batch()
    ce = losses.token_ce(logits, labels)
    mask = losses.answer_mask(labels)
    plain = ce[mask].mean()
    assert torch.allclose(losses.weighted_token_mean(ce, mask), plain)
    assert torch.allclose(losses.weighted_token_mean(ce, mask, torch.ones(2, 5)), plain)
    w = torch.zeros(2, 5)
    w[1, 3] = 2.0  # all weight on one token -> that token's loss
    assert torch.allclose(losses.weighted_token_mean(ce, mask, w), ce[1, 3])
    assert torch.allclose(losses.answer_nll(logits, labels), F.cross_entropy(
        logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100))


def test_masked_kl_is_zero_for_same_logits_and_ignores_prompt():
    logits, labels = _batch()
    assert losses.masked_kl(logits, logits, labels).abs() < 1e-6
    other = logits.clone()
    other[0, 0] += 5.0  # position 0 predicts labels[0, 1] = -100: outside the mask
    assert losses.masked_kl(logits, other, labels).abs() < 1e-6
    other[0, 1] += torch.arange(7.0)
    p, q = F.log_softmax(logits[0, 1], -1), F.log_softmax(other[0, 1], -1)
    kl = (p.exp() * (p - q)).sum()
    assert torch.allclose(losses.masked_kl(logits, other, labels), kl / 6)  # 6 answer tokens


def test_npo_equals_2_over_beta_ln2_at_reference():
    logp = torch.tensor([-3.0, -7.5])
    for beta in (0.1, 1.0):
        assert math.isclose(float(npo_loss(logp, logp, beta)), 2 / beta * math.log(2), rel_tol=1e-6)
    # lower likelihood than the reference -> smaller loss (that is what NPO descends towards)
    assert npo_loss(logp - 5, logp, 0.1) < npo_loss(logp, logp, 0.1)


def test_simnpo_known_value():
    nll_sum, count = torch.tensor([6.0]), torch.tensor([3])
    beta, delta = 4.5, 0.5
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-beta * (2.0 - delta))))
    assert math.isclose(float(simnpo_loss(nll_sum, count, beta, delta)), expected, rel_tol=1e-6)


def test_dpo_known_value():
    win, lose = torch.tensor([0.3]), torch.tensor([-0.2])
    expected = -(2 / 0.1) * math.log(1 / (1 + math.exp(-0.1 * 0.5)))
    assert math.isclose(float(dpo_loss(win, lose, 0.1)), expected, rel_tol=1e-6)


def test_undial_target_lowers_only_the_true_token():
    ref = torch.tensor([[2.0, 1.0, 0.0]])
    target = undial_target(ref, torch.tensor([0]), beta=10.0)
    expected = torch.softmax(torch.tensor([[-8.0, 1.0, 0.0]]), -1)
    assert torch.allclose(target, expected)
    assert torch.allclose(undial_target(ref, torch.tensor([0]), 0.0), torch.softmax(ref, -1))


def test_replace_answers_keeps_prompt_and_eos():
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 2], [5, 9, 8, 2, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]),
        "labels": torch.tensor([[-100, -100, 7, 8, 2], [-100, -100, 8, 2, -100]]),
        "index": torch.tensor([0, 1]),
    }
    out = replace_answers(batch, [[11], [12, 13, 14]], pad_id=0, eos_id=2)
    assert out["input_ids"].tolist() == [[5, 6, 11, 2, 0, 0], [5, 9, 12, 13, 14, 2]]
    assert out["labels"].tolist() == [[-100, -100, 11, 2, -100, -100], [-100, -100, 12, 13, 14, 2]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
