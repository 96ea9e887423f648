"""Knowledge metrics: answer NLL, probability, teacher-forced accuracy and exact match, MC accuracy.

Per example i with answer tokens a_1..a_n: nll_i = -(1/n) sum_t log p(a_t | q, a_<t),
prob_i = exp(-nll_i) (length-normalised, TOFU's probability), token_acc_i = share of answer
tokens that are the argmax, exact_match_i = 1 if all of them are, else 0. MC (WMDP style):
the choice with the largest SUMMED log-likelihood of its tokens wins (sum, as
lm-evaluation-harness `acc`; used everywhere here).
Each result carries its 95% interval as detail `ci` (out[split][f"{name}_ci"]: Wilson for 0/1
items, Student t for means; `eval.intervals`).
"""

from __future__ import annotations

import torch

from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.intervals import interval
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import TokenStats, nanmean


def answer_nll(stats: TokenStats) -> list[float]:
    """Per-example mean answer-token NLL."""
    return [float(-x) for x in stats.mean_logp()]


def answer_prob(stats: TokenStats) -> list[float]:
    """Per-example length-normalised answer probability exp(mean log p)."""
    return [float(x) for x in stats.mean_logp().exp()]


def token_accuracy(stats: TokenStats) -> list[float]:
    """Per-example share of answer tokens predicted exactly by the argmax."""
    return [float(c.float().mean()) if c.numel() else float("nan") for c in stats.correct]


def exact_answers(stats: TokenStats) -> list[float]:
    """Per example 1.0 if every answer token is the argmax, else 0.0 (nan without answer tokens)."""
    return [float(bool(c.all())) if c.numel() else float("nan") for c in stats.correct]


def mc_correct(choice_logliks: list[torch.Tensor], answers: list[int]) -> list[float]:
    """1.0 where the highest-log-likelihood choice is the answer (first index wins ties)."""
    return [float(int(torch.argmax(ll)) == a) for ll, a in zip(choice_logliks, answers)]


def _from_qa(ctx: EvalContext, split: str, fn) -> MetricResult | None:
    qa = ctx.qa_pass(split)
    if qa is None:
        return None
    per = fn(qa.stats)
    return MetricResult(nanmean(per), per, {"ci": interval(per)})


@metric("nll", higher_is_better=False, detail_keys=("ci",))
def nll(ctx: EvalContext, split: str) -> MetricResult | None:
    """Mean over examples of the mean answer-token negative log-likelihood."""
    return _from_qa(ctx, split, answer_nll)


@metric("prob", higher_is_better=True, detail_keys=("ci",))
def prob(ctx: EvalContext, split: str) -> MetricResult | None:
    """Mean length-normalised answer probability."""
    return _from_qa(ctx, split, answer_prob)


@metric("token_acc", higher_is_better=True, detail_keys=("ci",))
def token_acc(ctx: EvalContext, split: str) -> MetricResult | None:
    """Teacher-forced answer-token accuracy."""
    return _from_qa(ctx, split, token_accuracy)


@metric("exact_match", higher_is_better=True, detail_keys=("ci",))
def exact_match(ctx: EvalContext, split: str) -> MetricResult | None:
    """Share of answers with every token predicted by the argmax (teacher-forced)."""
    return _from_qa(ctx, split, exact_answers)


def _mc(ctx: EvalContext, split: str) -> MetricResult | None:
    scored = ctx.mc_loglik(split)
    if scored is None:
        return None
    per = mc_correct(*scored)
    return MetricResult(nanmean(per), per, {"chance": nanmean([1.0 / len(ll) for ll in scored[0]]),
                                            "ci": interval(per)})


@metric("mc_acc", higher_is_better=True, detail_keys=("chance", "ci"))
def mc_acc(ctx: EvalContext, split: str) -> MetricResult | None:
    """Multiple-choice accuracy by summed log-likelihood of each choice."""
    return _mc(ctx, split)


@metric("utility_mc", higher_is_better=True, scope="global", detail_keys=("chance", "ci"))
def utility_mc(ctx: EvalContext) -> MetricResult | None:
    """MC accuracy on the general-utility set (retain domains)."""
    return _mc(ctx, "utility")
