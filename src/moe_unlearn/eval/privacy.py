"""Membership inference: LOSS, zlib, Min-k% and Min-k%++ scores; AUC forget vs holdout; PrivLeak.

Every score is oriented so that HIGHER means "looks like a training member":
- loss    = mean log p over scored tokens (= -NLL);
- zlib    = mean log p / len(zlib.compress(text))  (log-perplexity relative to zlib entropy);
- mink    = mean of the lowest k% token log-probs (Shi et al. 2024; k = 0.4 is MUSE's Min-40%);
- minkpp  = same over z_t = (log p_t - mu_t) / sigma_t, mu/sigma of log p under the model's
  next-token distribution (Zhang et al. 2024).
Scored tokens are the text's own (or the answer's own) tokens, as the papers score
`tokenizer.encode(text)`: the EOS our encoder appends is dropped unless `eval.mia_include_eos`.

Two orientations of the AUC (sklearn roc_auc_score), one the complement of the other:
- `auc` (MUSE's, the headline): forget labelled 0, holdout labelled 1, ranked by the score, i.e.
  P(holdout scores above forget). Near 0: forget looks far more familiar (membership leaks);
  ~0.5: indistinguishable. MUSE's retrained models sit near 0.5 (0.4772 on News).
- `member_auc`: forget = members (label 1), holdout = non-members (0); = 1 - auc.
PrivLeak (MUSE) = (auc - auc_retrained) / auc_retrained x 100, both in MUSE's orientation:
0 is ideal, about -100 for a model that memorised the forget set (MUSE's target models: -99.8 on
News), positive = over-unlearned (forget looks LESS familiar than unseen data).
`member_privleak` is the same ratio on member_auc (this project's earlier `privleak`).
Scored on a split's texts when it has them, else on its QA answers.
"""

from __future__ import annotations

import math
import zlib

from sklearn.metrics import roc_auc_score

from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import TokenStats, lowest_fraction_means, padded, row_means

SCORES = ("loss", "zlib", "mink", "minkpp")


def mia_scores(stats: TokenStats, texts: list[str], k: float) -> dict[str, list[float]]:
    """All four scores per example (Min-k%++ needs stats computed with moments=True), over the
    padded [N, L] rows at once; an example without scored tokens scores nan."""
    logp, n = padded(stats.logp)
    z = (logp - padded(stats.mu)[0]) / padded(stats.sigma)[0].clamp_min(1e-8)
    loss = row_means(logp, n).tolist()
    compressed = [len(zlib.compress(text.encode("utf-8"))) for text in texts[:len(loss)]]
    return {"loss": loss, "zlib": [x / c for x, c in zip(loss, compressed, strict=True)],
            "mink": lowest_fraction_means(logp, n, k).tolist(), "minkpp": lowest_fraction_means(z, n, k).tolist()}


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]  # an example with no scored token has no score


def muse_auc(forget: list[float], holdout: list[float]) -> float:
    """MUSE's orientation: forget labelled 0, holdout labelled 1 (member_auc is 1 - this)."""
    forget, holdout = _finite(forget), _finite(holdout)
    return float(roc_auc_score([0] * len(forget) + [1] * len(holdout), forget + holdout))


def privleak(auc_value: float, retrained_auc: float) -> float:
    """(AUC - AUC_retrained) / AUC_retrained x 100 (MUSE; both AUCs in the same orientation)."""
    if retrained_auc <= 0:
        return float("nan")  # undefined (written as null)
    return (auc_value - retrained_auc) / retrained_auc * 100.0


def membership_scores(ctx: EvalContext, split: str, on: str) -> dict[str, list[float]] | None:
    """The four scores per example of split's texts (on="text") or QA answers (on="qa"), text tokens only
    unless eval.mia_include_eos."""
    if on == "text":
        stats, texts = ctx.text_stats(split), [r["text"] for r in ctx.records(split, "text") or []]
    else:
        qa = ctx.qa_pass(split)
        stats, texts = (qa.stats if qa else None), [str(r["answer"]) for r in ctx.records(split, "qa") or []]
        if stats is not None and not stats.mu:  # QA pass has no moments: rescore with them
            stats = ctx.memo(("qa_moments", split), lambda: ctx.score(ctx.qa_batches(split), moments=True))
    if stats is None:
        return None
    if not ctx.cfg.mia_include_eos:
        stats = stats.without_final(ctx.tokenizer.eos_token_id)
    return mia_scores(stats, texts, ctx.cfg.mink_k)


def retrained_aucs(ctx: EvalContext) -> tuple[dict[str, float], str]:
    """The reference AUC per score in MUSE's orientation, and where it came from.

    From the retrained model's metrics.json when given: its `auc` (MUSE's orientation; a
    metrics.json written before `member_auc` existed held the member orientation and is
    flipped), else eval.retrained_auc for every score."""
    ref = (ctx.retrained or {}).get("privacy") or {}
    if ref.get("auc"):
        flip = "member_auc" not in ref
        given = {s: ref["auc"].get(s) for s in SCORES}
        return {s: ctx.cfg.retrained_auc if a is None else 1.0 - float(a) if flip else float(a)
                for s, a in given.items()}, "retrained model"
    return {s: float(ctx.cfg.retrained_auc) for s in SCORES}, "eval.retrained_auc"


@metric("privacy", higher_is_better=False, scope="global")
def privacy(ctx: EvalContext) -> MetricResult | None:
    """Membership-inference AUC forget vs holdout and PrivLeak (MUSE); value = Min-k% PrivLeak (0 ideal)."""
    on = "text" if ctx.records("forget", "text") and ctx.records("holdout", "text") else "qa"
    forget, holdout = membership_scores(ctx, "forget", on), membership_scores(ctx, "holdout", on)
    if not forget or not holdout:
        return None
    ref, source = retrained_aucs(ctx)
    aucs = {s: muse_auc(forget[s], holdout[s]) for s in SCORES}
    members = {s: 1.0 - aucs[s] for s in SCORES}  # the same ranking, the labels swapped
    details = {
        "on": on, "orientation": "muse", "k": ctx.cfg.mink_k, "include_eos": ctx.cfg.mia_include_eos,
        "auc": aucs, "privleak": {s: privleak(aucs[s], ref[s]) for s in SCORES},
        "retrained_auc": ref, "retrained_auc_source": source,
        "member_auc": members, "member_privleak": {s: privleak(members[s], 1.0 - ref[s]) for s in SCORES},
    }
    return MetricResult(details["privleak"]["mink"], forget["mink"], details)
