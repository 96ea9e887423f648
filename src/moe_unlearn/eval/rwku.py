"""RWKU's forget / neighbor probes and its MIA loss, as the RWKU paper (and SEUF, which uses it) reports them.

- rwku_rouge: ROUGE-L RECALL (the `rouge-score` library, no stemming) of the greedy answer
  against the true answer, per probe; the value is the mean over every probe, and each
  record's `group` (FB fill-in-the-blank, QA question answering, AA adversarial attack) gets
  its own mean, stored as `<split>.rwku_rouge_<group>`. RWKU generates 30 new tokens
  (eval.max_new_tokens_qa: 30 in the recipe) and scores with the `rouge` package, whose
  tokenisation differs slightly from rouge-score's.
- text_nll: mean over a split's texts of the mean token negative log-likelihood (RWKU's MIA
  "LOSS" on its forget_mia / retain_mia sets; after unlearning the forget one should rise).
"""

from __future__ import annotations

from rouge_score import rouge_scorer

from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.generation import greedy_generate, qa_prompts
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import nanmean

_RECALL = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall: longest common subsequence / reference length, in words."""
    return float(_RECALL.score(reference, prediction)["rougeL"].recall)


def group_means(values: list[float], groups: list[str | None]) -> dict[str, float | None]:
    """Mean of the values of each named group, in first-seen order (records without a group skipped)."""
    out: dict[str, list[float]] = {}
    for v, g in zip(values, groups):
        if g is not None:
            out.setdefault(str(g), []).append(v)
    return {g: nanmean(vs) for g, vs in out.items()}


@metric("rwku_rouge", higher_is_better=True, splits=("forget", "retain"))
def rwku_rouge(ctx: EvalContext, split: str) -> MetricResult | None:
    """RWKU probes: ROUGE-L recall of the greedy answer, overall and per record group (FB / QA / AA)."""
    recs = ctx.records(split, "qa")
    if not recs:
        return None
    preds = greedy_generate(ctx.model, ctx.tokenizer, qa_prompts(ctx, split), max_new_tokens=ctx.cfg.max_new_tokens_qa,
                            batch_size=ctx.cfg.batch_size, progress=ctx.progress)
    per = [rouge_l_recall(p, str(r["answer"])) for p, r in zip(preds, recs)]
    details = dict(group_means(per, [r.get("group") for r in recs]))
    details["samples"] = [{"prediction": p, "reference": r["answer"]} for p, r in zip(preds[:3], recs[:3])]
    return MetricResult(nanmean(per), per, details)


@metric("text_nll", higher_is_better=False)
def text_nll(ctx: EvalContext, split: str) -> MetricResult | None:
    """Mean over a split's texts of the mean token negative log-likelihood (RWKU's MIA loss)."""
    stats = ctx.text_stats(split)
    if stats is None:
        return None
    per = [float(-x) for x in stats.mean_logp()]
    return MetricResult(nanmean(per), per)
