"""Membership inference: LOSS, zlib, Min-k% and Min-k%++ scores; AUC forget vs holdout; PrivLeak.

Every score is oriented so that HIGHER means "looks like a training member":
- loss    = mean log p over scored tokens (= -NLL);
- zlib    = mean log p / len(zlib.compress(text))  (log-perplexity relative to zlib entropy);
- mink    = mean of the lowest k% token log-probs (Shi et al. 2024);
- minkpp  = same over z_t = (log p_t - mu_t) / sigma_t, mu/sigma of log p under the model's
  next-token distribution (Zhang et al. 2024).
AUC (sklearn roc_auc_score) takes forget = members (label 1), holdout = non-members (label 0).
PrivLeak = (AUC - AUC_retrained) / AUC_retrained x 100 (MUSE; 0 is ideal, negative = over-unlearned).
Scored on a split's texts when it has them, else on its QA answers.
"""

from __future__ import annotations

import zlib

import torch
from sklearn.metrics import roc_auc_score

from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import TokenStats, lowest_fraction_mean

SCORES = ("loss", "zlib", "mink", "minkpp")


def loss_score(logp: torch.Tensor) -> float:
    return float(logp.mean())


def zlib_score(logp: torch.Tensor, text: str) -> float:
    return float(logp.mean()) / len(zlib.compress(text.encode("utf-8")))


def mink_score(logp: torch.Tensor, k: float) -> float:
    return lowest_fraction_mean(logp, k)


def minkpp_score(logp: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, k: float) -> float:
    return lowest_fraction_mean((logp - mu) / sigma.clamp_min(1e-8), k)


def mia_scores(stats: TokenStats, texts: list[str], k: float) -> dict[str, list[float]]:
    """All four scores per example (Min-k%++ needs stats computed with moments=True)."""
    out: dict[str, list[float]] = {"loss": [], "zlib": [], "mink": [], "minkpp": []}
    for i, lp in enumerate(stats.logp):
        out["loss"].append(loss_score(lp))
        out["zlib"].append(zlib_score(lp, texts[i]))
        out["mink"].append(mink_score(lp, k))
        out["minkpp"].append(minkpp_score(lp, stats.mu[i], stats.sigma[i], k))
    return out


def auc(members: list[float], non_members: list[float]) -> float:
    """ROC AUC of telling members (label 1) from non-members (label 0) by score."""
    return float(roc_auc_score([1] * len(members) + [0] * len(non_members), list(members) + list(non_members)))


def privleak(auc_value: float, retrained_auc: float) -> float:
    """(AUC - AUC_retrained) / AUC_retrained x 100."""
    return (auc_value - retrained_auc) / retrained_auc * 100.0


def _split_scores(ctx: EvalContext, split: str, on: str) -> dict[str, list[float]] | None:
    if on == "text":
        stats, texts = ctx.text_stats(split), [r["text"] for r in ctx.records(split, "text") or []]
    else:
        qa = ctx.qa_pass(split)
        stats, texts = (qa.stats if qa else None), [str(r["answer"]) for r in ctx.records(split, "qa") or []]
        if stats is not None and not stats.mu:  # QA pass has no moments: rescore with them
            stats = ctx.memo(("qa_moments", split), lambda: ctx.score(ctx.qa_batches(split), moments=True))
    return None if stats is None else mia_scores(stats, texts, ctx.cfg.mink_k)


def _retrained_auc(ctx: EvalContext, score: str) -> float:
    ref = ((ctx.retrained or {}).get("privacy") or {}).get("auc") or {}
    return float(ref.get(score, ctx.cfg.retrained_auc))


@metric("privacy", higher_is_better=False, scope="global")
def privacy(ctx: EvalContext) -> MetricResult | None:
    """Membership-inference AUC forget vs holdout and PrivLeak; value = Min-k% PrivLeak (0 ideal)."""
    on = "text" if ctx.records("forget", "text") and ctx.records("holdout", "text") else "qa"
    forget, holdout = _split_scores(ctx, "forget", on), _split_scores(ctx, "holdout", on)
    if not forget or not holdout:
        return None
    aucs = {s: auc(forget[s], holdout[s]) for s in SCORES}
    leaks = {s: privleak(aucs[s], _retrained_auc(ctx, s)) for s in SCORES}
    details = {"on": on, "auc": aucs, "privleak": leaks, "retrained_auc": {s: _retrained_auc(ctx, s) for s in SCORES}}
    return MetricResult(leaks["mink"], forget["mink"], details)
