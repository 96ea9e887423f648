"""exact_match: per answer 1 if every answer token is the argmax, by hand and through the registry."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from moe_unlearn.eval import METRICS
from moe_unlearn.eval.knowledge import exact_answers
from moe_unlearn.eval.scores import TokenStats, token_stats


def test_exact_answers_by_hand():
    none = torch.tensor([], dtype=torch.bool)
    st = TokenStats(correct=[torch.tensor([True, True]), torch.tensor([True, False]), none, torch.tensor([True])])
    per = exact_answers(st)
    assert per[:2] == [1.0, 0.0] and math.isnan(per[2]) and per[3] == 1.0


def test_exact_match_metric_on_controlled_logits():
    # vocab 3; example 0 argmaxes its two answer tokens (2, 1); example 1 misses its second one (0 vs 2)
    logits = torch.tensor([[[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]],
                           [[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 2, 1], [-100, 1, 2]])
    ctx = SimpleNamespace(qa_pass=lambda split: SimpleNamespace(stats=token_stats(logits, labels)))
    res = METRICS.get("exact_match").fn(ctx, "forget")
    assert res.per_example == [1.0, 0.0] and res.value == pytest.approx(0.5)
    assert METRICS.get("exact_match").higher_is_better
    assert METRICS.get("exact_match").fn(SimpleNamespace(qa_pass=lambda split: None), "forget") is None
