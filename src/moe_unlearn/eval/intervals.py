"""95% intervals for the numbers people compare, from scipy.stats.

A forget MC accuracy on 64 items carries a standard error near 0.06, as large as the effects
being judged, so every headline accuracy is reported with its interval and every comparison
with the interval of the difference. MC correctness is 0/1 per item (Wilson score interval);
token accuracy and NLL are per-item means (Student t). A comparison of two models on the same
items is paired; on different items (a split standing in for another) it is Welch's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LEVEL = 0.95


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def proportion_interval(correct: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Wilson score interval of a 0/1 per-item list (None when empty)."""
    from scipy.stats import binomtest

    xs = _finite(correct)
    if not xs:
        return None
    ci = binomtest(round(sum(xs)), len(xs)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Student-t interval of a per-item mean (None when empty; the mean itself when there is no spread)."""
    from scipy.stats import t

    xs = _finite(values)
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    if len(xs) < 2 or all(x == xs[0] for x in xs):
        return mean, mean
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    lo, hi = t.interval(level, len(xs) - 1, loc=mean, scale=sd / math.sqrt(len(xs)))
    return float(lo), float(hi)


def interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Wilson for 0/1 lists (MC correctness, exact match), Student t for anything else."""
    xs = _finite(values)
    return proportion_interval(xs, level) if xs and all(x in (0.0, 1.0) for x in xs) else mean_interval(xs, level)


def difference_interval(a: Sequence[float], b: Sequence[float], *, paired: bool,
                        level: float = LEVEL) -> tuple[float, float, float] | None:
    """(mean(a) - mean(b), low, high): paired t on the same items, Welch's t on different ones."""
    from scipy.stats import ttest_ind, ttest_rel

    if paired:
        pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None
                 and math.isfinite(float(x)) and math.isfinite(float(y))]
        if len(a) != len(b) or not pairs:
            return None
        d = [float(x) - float(y) for x, y in pairs]
        mean = sum(d) / len(d)
        if len(d) < 2 or all(x == d[0] for x in d):
            return mean, mean, mean
        ci = ttest_rel([p[0] for p in pairs], [p[1] for p in pairs]).confidence_interval(level)
        return mean, float(ci.low), float(ci.high)
    xa, xb = _finite(a), _finite(b)
    if not xa or not xb:
        return None
    mean = sum(xa) / len(xa) - sum(xb) / len(xb)
    if len(xa) < 2 or len(xb) < 2 or (len(set(xa)) == 1 and len(set(xb)) == 1):
        return mean, mean, mean
    ci = ttest_ind(xa, xb, equal_var=False).confidence_interval(level)
    return mean, float(ci.low), float(ci.high)


def inside_noise(diff: tuple[float, float, float] | None) -> bool | None:
    """True when the difference's interval contains 0 (None when there is no interval)."""
    return None if diff is None else diff[1] <= 0.0 <= diff[2]
