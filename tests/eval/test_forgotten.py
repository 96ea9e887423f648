"""95% intervals and the oracle-relative definition of "forgotten" (eval.intervals, eval.forgotten)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from moe_unlearn.eval.forgotten import ForgetTarget, forgotten, holdout_target, oracle_target, target_from
from moe_unlearn.eval.intervals import difference_interval, inside_noise, interval, mean_interval, proportion_interval
from moe_unlearn.eval.metric import MetricResult


def test_wilson_interval_matches_the_closed_form():
    xs = [1.0] * 84 + [0.0] * 172  # 84 / 256 correct, the oracle's forget MC in the issue
    lo, hi = proportion_interval(xs)
    n, p, z = 256, 84 / 256, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    assert hi - lo < 0.12  # 256 items: half-width under 0.06, the bound on the standard error x 1.96


def test_interval_picks_wilson_for_0_1_and_t_for_means():
    assert interval([1.0, 0.0, 1.0, 1.0]) == proportion_interval([1.0, 0.0, 1.0, 1.0])
    values = [0.5, 1.5, 2.0, 3.0, 2.5]
    lo, hi = interval(values)
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    assert lo == pytest.approx(mean - 2.7764451051977987 * sd / math.sqrt(5))  # t(0.975, 4)
    assert hi == pytest.approx(mean + 2.7764451051977987 * sd / math.sqrt(5))
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert interval([]) is None and interval([float("nan")]) is None


def test_paired_difference_sees_what_unpaired_cannot():
    # every item moves by +0.1 with large spread across items: paired is exact, Welch is wide
    a = [float(i) for i in range(20)]
    b = [x - 0.1 for x in a]
    d, lo, hi = difference_interval(a, b, paired=True)
    assert (d, lo, hi) == pytest.approx((0.1, 0.1, 0.1))
    d2, lo2, hi2 = difference_interval(a, b, paired=False)
    assert d2 == pytest.approx(0.1) and lo2 < 0 < hi2
    assert inside_noise((d, lo, hi)) is False and inside_noise((d2, lo2, hi2)) is True
    assert difference_interval([1.0, 2.0], [1.0], paired=True) is None  # not the same items


def test_target_is_the_end_of_the_references_interval():
    mc = [1.0] * 84 + [0.0] * 172
    nll = [3.0 + (i % 7) * 0.1 for i in range(256)]
    target = target_from({"mc_acc": mc, "nll": nll}, "oracle")
    assert target.mc_at_most == pytest.approx(proportion_interval(mc)[1])
    assert target.nll_at_least == pytest.approx(mean_interval(nll)[0])
    assert target.mc_at_most > 84 / 256 and target.nll_at_least < sum(nll) / 256
    assert target.reached({"mc_acc": 0.35, "nll": 3.5}) is True
    assert target.reached({"mc_acc": 0.45, "nll": 3.5}) is False  # MC above the oracle's interval
    assert target.reached({"mc_acc": 0.35, "nll": 1.0}) is False  # still too likely
    assert ForgetTarget("oracle", None, None).reached({"mc_acc": 0.0}) is False  # nothing to judge


def test_oracle_and_holdout_targets_read_metrics_json():
    metrics = {"per_example": {"forget": {"mc_acc": [1.0, 0.0]}, "holdout": {"nll": [2.0, 4.0]}}}
    assert oracle_target(metrics).mc_at_most is not None and oracle_target(metrics).nll_at_least is None
    assert holdout_target(metrics).reference == "holdout" and holdout_target(metrics).mc_at_most is None
    assert oracle_target(None) is None and oracle_target({}) is None


def _ctx(results: dict[tuple[str, str], list[float]], retrained: dict | None) -> SimpleNamespace:
    def result(name, split):
        per = results.get((name, split))
        return None if per is None else MetricResult(sum(per) / len(per), per)
    return SimpleNamespace(retrained=retrained, result=result)


def test_forgotten_against_the_oracle_is_paired_and_gives_gaps():
    oracle_mc = [1.0, 0.0, 0.0, 0.0] * 64
    oracle_nll = [3.0, 3.2, 2.8, 3.1] * 64
    retrained = {"per_example": {"forget": {"mc_acc": oracle_mc, "nll": oracle_nll}}}
    run = {("mc_acc", "forget"): [1.0, 1.0, 0.0, 0.0] * 64, ("nll", "forget"): [3.1, 3.3, 2.9, 3.2] * 64}
    res = forgotten(_ctx(run, retrained))
    assert res.value == 0.0  # MC 0.5 lies above the oracle's 0.25 interval
    assert res.details["reference"] == "oracle"
    gap = res.details["mc_acc"]
    assert gap["paired"] is True and gap["gap"] == pytest.approx(0.25) and gap["inside_noise"] is False
    assert res.details["nll"]["gap"] == pytest.approx(0.1)
    run[("mc_acc", "forget")] = oracle_mc
    assert forgotten(_ctx(run, retrained)).value == 1.0


def test_forgotten_without_an_oracle_uses_the_holdout_split():
    run = {("mc_acc", "forget"): [0.0, 1.0, 0.0, 0.0] * 16, ("nll", "forget"): [4.0, 4.2] * 32,
           ("mc_acc", "holdout"): [1.0, 0.0, 0.0, 0.0] * 8, ("nll", "holdout"): [4.1, 3.9] * 16}
    res = forgotten(_ctx(run, None))
    assert res.details["reference"] == "holdout" and res.details["mc_acc"]["paired"] is False
    assert res.value == 1.0
    assert forgotten(_ctx({("mc_acc", "forget"): [1.0]}, None)) is None  # no reference at all
