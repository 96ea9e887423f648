"""TOFU metrics: truth ratio, forget quality (KS test) and model utility (harmonic mean).

Truth ratio per question (TOFU): R = p~(perturbed) / p~(base), p~(a) = P(a|q)^(1/|a|),
the perturbed side the geometric mean over the perturbed answers:
R = exp(mean_j mean_t log p(pert_j) - mean_t log p(base)). R < 1: the model prefers the truth.
(open-unlearning src/evals/metrics/memorization.py lines 156-164: wrong / correct from mean
token losses; TOFU aggregate_eval_stat.py line 66 computes 1/R.)
The base answer is the paraphrased answer where a record has one, else the answer itself
(TOFU's own choice for its real-authors and world-facts sets, which are always scored against
the answer). The aggregate is TOFU's statistic for the split (`TRUTH_STATS`): on the forget set
mean min(R, 1/R) (1 = the truth and the perturbations equally likely, as for a model that never
saw them), elsewhere mean max(0, 1 - R) (higher = knows the truth); both are in the details.
Per-example values are the raw R, which forget quality compares with a retain-only model's
(two-sample KS test, as TOFU; the test is the same on R and on TOFU's 1/R).

Two model utilities, each under its own name:
- `tofu_model_utility` (TOFU): harmonic mean of NINE numbers, probability, ROUGE-L recall
  (stemmed, `tofu_rouge`) and truth statistic on each of retain, real authors and world facts
  (`data.real_authors`, `data.world_facts`). Probability is exp(-mean answer NLL) on retain and
  the normalised p~(answer) / (p~(answer) + sum_j p~(pert_j)) on the other two, as TOFU.
- `model_utility` (this project's retain-only form): harmonic mean of the retain set's `prob`,
  `rouge_qa` (MUSE's F1) and `truth_ratio`, those that ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from scipy.stats import ks_2samp

from moe_unlearn.core.chunked import answer_mask
from moe_unlearn.data.tokenize import collate
from moe_unlearn.eval.batches import qa_examples
from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import nanmean


def truth_ratio_values(para_logp: torch.Tensor, pert_logp: list[torch.Tensor]) -> list[float]:
    """R_i from length-normalised log-likelihoods: para [N], pert list of [P_i]."""
    return [float(torch.exp(p.mean() - a)) for a, p in zip(para_logp, pert_logp)]


def closer_to_1_better(ratios: list[float]) -> float:
    """Mean min(R, 1/R): 1 when truth and perturbations are equally likely (forget: a model that never saw them)."""
    return nanmean([min(r, 1 / r) for r in ratios])


def true_better(ratios: list[float]) -> float:
    """Mean max(0, 1 - R): higher when the truth is preferred (knowledge kept)."""
    return nanmean([max(0.0, 1 - r) for r in ratios])


# The two aggregates of R, named as open-unlearning names them (src/evals/metrics/memorization.py,
# truth_ratio, lines 114-120); TOFU's aggregate_eval_stat.py lines 68-71 compute the same from 1/R.
TRUTH_STATS: dict[str, Callable[[list[float]], float]] = {
    "closer_to_1_better": closer_to_1_better,
    "true_better": true_better,
}
# The one each split reports as `truth_ratio`: closer_to_1_better on forget (open-unlearning
# configs/eval/tofu_metrics/forget_Truth_Ratio.yaml, line 13), true_better on retain, real
# authors and world facts (retain_ / ra_ / wf_Truth_Ratio.yaml) and on every other set.
SPLIT_TRUTH_STAT = {"forget": "closer_to_1_better"}
DEFAULT_TRUTH_STAT = "true_better"


def forget_quality_pvalue(unlearned: list[float], retrained: list[float]) -> float:
    """Two-sample KS test p-value between two truth-ratio samples (high = indistinguishable)."""
    return float(ks_2samp(unlearned, retrained).pvalue)


def harmonic_mean(values: list[float]) -> float:
    """n / sum(1/v); 0 if any value is 0 (TOFU's model utility)."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


# TOFU's extra utility sets (data.real_authors, data.world_facts): truth ratio against the answer
UTILITY_SETS = ("real_authors", "world_facts")


@dataclass
class PerturbedScores:
    """Length-normalised log-likelihoods of the records that have perturbed answers."""

    answer: torch.Tensor | None  # [N] the true answer (None when every base is a paraphrase)
    base: torch.Tensor  # [N] the truth ratio's base: paraphrased answer (if any, outside UTILITY_SETS) or answer
    perturbed: list[torch.Tensor]  # N x [P_i]
    base_key: str  # "paraphrased_answer", "answer" or "mixed"


def _mean_logps(ctx: EvalContext, question: list[str], answers: list[list[str]], desc: str) -> list[torch.Tensor]:
    """Per question, the length-normalised log-likelihood of each of its answers; each question
    runs once for all its answers (EvalContext.shared_prompt_logliks)."""
    recs = [{"question": q, "answer": a} for q, ans in zip(question, answers) for a in ans]
    examples = qa_examples(ctx.tokenizer, recs, ctx.cfg)
    sizes = [len(ans) for ans in answers]
    total = ctx.shared_prompt_logliks(examples, sizes, desc=desc)
    scored = answer_mask(collate(examples, ctx.pad_id)["labels"]).sum(1).to(total.dtype)  # the tokens `score` reads
    return list(torch.split(total / scored, sizes))  # no scored token: 0 / 0 = nan


def perturbed_scores(ctx: EvalContext, split: str) -> PerturbedScores | None:
    """Score answers, base answers and perturbed answers of split's QA records once per context."""
    recs = [r for r in ctx.records(split, "qa") or [] if r.get("perturbed_answer")]
    if not recs:
        return None

    def run() -> PerturbedScores:
        paraphrased = [bool(r.get("paraphrased_answer")) and split not in UTILITY_SETS for r in recs]
        with_answer, with_base = not all(paraphrased), any(paraphrased)
        # per record: [answer] (unless every base is a paraphrase), [base] (if any is), perturbed...
        answers = [[r["answer"]] * with_answer + [r["paraphrased_answer"] if p else r["answer"]] * with_base
                   + list(r["perturbed_answer"]) for r, p in zip(recs, paraphrased)]
        scores = _mean_logps(ctx, [r["question"] for r in recs], answers, f"tofu {split} answers")
        answer = torch.stack([s[0] for s in scores]) if with_answer else None
        base = torch.stack([s[int(with_answer)] for s in scores]) if with_base else answer
        pert = [s[int(with_answer) + int(with_base):] for s in scores]
        key = "paraphrased_answer" if all(paraphrased) else "mixed" if any(paraphrased) else "answer"
        return PerturbedScores(answer, base, pert, key)

    return ctx.memo(("perturbed_scores", split), run)


def normalised_prob(answer: torch.Tensor, perturbed: list[torch.Tensor]) -> list[float]:
    """TOFU's probability on real authors / world facts: p~(a) / (p~(a) + sum_j p~(pert_j))."""
    return [float(a.exp() / (a.exp() + p.exp().sum())) for a, p in zip(answer, perturbed)]


# tofu_forget_stat: the forget statistic in metrics.json written before `stat` existed
@metric("truth_ratio", higher_is_better=True,
        detail_keys=("stat", "mean_ratio", "base", *TRUTH_STATS, "tofu_forget_stat"))
def truth_ratio(ctx: EvalContext, split: str) -> MetricResult | None:
    """TOFU truth ratio where perturbed_answer exists: forget mean min(R, 1/R), other sets mean max(0, 1 - R)."""
    scored = perturbed_scores(ctx, split)
    if scored is None:
        return None
    ratios = truth_ratio_values(scored.base, scored.perturbed)
    stat = SPLIT_TRUTH_STAT.get(split, DEFAULT_TRUTH_STAT)
    details = {"stat": stat, "mean_ratio": nanmean(ratios), "base": scored.base_key,
               **{name: fn(ratios) for name, fn in TRUTH_STATS.items()}}
    return MetricResult(TRUTH_STATS[stat](ratios), ratios, details)


@metric("forget_quality", higher_is_better=True, scope="global")
def forget_quality(ctx: EvalContext) -> MetricResult | None:
    """KS-test p-value of forget truth ratios vs a retain-only model's (needs its metrics.json).

    Tests the raw per-question R (truth_ratio's per-example values, never its aggregate), as
    open-unlearning's ks_test does (src/evals/metrics/privacy.py); TOFU's aggregate_eval_stat.py
    (lines 22-25) tests 1/R, which gives the same KS statistic and p-value (1/x is monotone).
    """
    ref = (((ctx.retrained or {}).get("per_example") or {}).get("forget") or {}).get("truth_ratio")
    own = ctx.result("truth_ratio", "forget")
    if not ref or own is None:
        return None
    return MetricResult(forget_quality_pvalue(own.per_example, ref), [], {"n": len(own.per_example), "n_retrained": len(ref)})


@metric("tofu_model_utility", higher_is_better=True, scope="global")
def tofu_model_utility(ctx: EvalContext) -> MetricResult | None:
    """TOFU model utility: harmonic mean of prob, ROUGE-L recall, truth statistic on retain, real authors, world facts."""
    if not all(ctx.records(s, "qa") for s in UTILITY_SETS):
        return None  # needs data.real_authors and data.world_facts
    parts: dict[str, float | None] = {}
    for split in ("retain", *UTILITY_SETS):
        if split == "retain":
            prob = ctx.result("prob", split)
            parts[f"{split}_prob"] = None if prob is None else prob.value
        else:
            scored = perturbed_scores(ctx, split)
            parts[f"{split}_prob"] = None if scored is None or scored.answer is None else nanmean(
                normalised_prob(scored.answer, scored.perturbed))
        for name in ("tofu_rouge", "truth_ratio"):
            res = ctx.result(name, split)
            parts[f"{split}_{name}"] = None if res is None else res.value
    missing = [k for k, v in parts.items() if v is None or math.isnan(v)]
    value = None if missing else harmonic_mean([float(v) for v in parts.values()])  # type: ignore[arg-type]
    return MetricResult(value, [], {"parts": parts, "missing": missing})


@metric("model_utility", higher_is_better=True, scope="global")
def model_utility(ctx: EvalContext) -> MetricResult | None:
    """Harmonic mean of the retain set's prob, ROUGE-L (rouge_qa) and truth statistic, where run."""
    parts = {}
    for name in ("prob", "rouge_qa", "truth_ratio"):
        if name in ctx.cfg.metrics:
            r = ctx.result(name, "retain")
            if r is not None and r.value is not None and not math.isnan(r.value):
                parts[name] = r.value
    if not parts:
        return None
    return MetricResult(harmonic_mean(list(parts.values())), [], {"parts": parts})
