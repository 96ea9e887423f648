"""The one place for the loss arithmetic methods, adapters and metrics share.

Token-level tensors are ALIGNED WITH LABELS: entry [b, t] is the loss of predicting
labels[b, t] from logits[b, t - 1], so position 0 is always masked out. This keeps token
weights (TRACE, [B, S]) and answer masks in the same frame as the batch.

Every loss takes a logits tensor [B, S, V] or the `ChunkedLogits` of a forward (`out.lm`); the
vocabulary-sized work runs in chunks over the answer positions only (core/chunked.py), so no
full-vocabulary float32 logits exist for the whole batch.

Means over tokens are GLOBAL means: a process divides its own sum by the mean over processes
of the token counts, so the gradient average data parallelism takes is exactly the gradient of
the mean over every process's tokens (one process with the global batch gives the same loss).
"""

from __future__ import annotations

import torch

from moe_unlearn.core.chunked import IGNORE, LogitsLike, answer_mask, label_logprobs, token_kl
from moe_unlearn.core.dist import mean_over_processes

__all__ = ["IGNORE", "answer_mask", "answer_nll", "masked_kl", "normalise_weights", "sequence_nll", "token_ce",
           "token_mean", "weighted_token_mean"]


def token_ce(logits: LogitsLike, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy [B, S] (0 off answer tokens) from logits [B, S, V] or ChunkedLogits.

    Computed only at answer positions, `chunk` rows at a time (core/chunked.py).
    """
    return -label_logprobs(logits, labels)


def sequence_nll(logits: LogitsLike, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL summed over each sequence's answer tokens [B], answer-token count [B])."""
    mask = answer_mask(labels)
    ce = token_ce(logits, labels)
    return (ce * mask).sum(dim=1), mask.sum(dim=1)


def weighted_token_mean(
    token_loss: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """sum_t w_t m_t l_t / sum_t w_t m_t over [B, S]; weights None means all ones.

    This is where TRACE's retain token weights enter every method's retain loss.
    """
    m = mask.to(token_loss.dtype)
    if weights is not None:
        m = m * weights.to(token_loss.dtype)
    return (token_loss * m).sum() / mean_over_processes(m.sum()).clamp_min(1e-12)


def token_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of every entry of `values` (one per token) over all processes' tokens (see module doc)."""
    count = torch.tensor(float(values.numel()), device=values.device, dtype=values.dtype)
    return values.sum() / mean_over_processes(count).clamp_min(1)


def masked_kl(
    ref_logits: LogitsLike,
    logits: LogitsLike,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean KL(pi_ref || pi_theta) over answer tokens only (the public code averages all tokens)."""
    return weighted_token_mean(token_kl(ref_logits, logits, labels), answer_mask(labels), weights)


def normalise_weights(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale [B, S] weights so they average 1 over the masked (answer) tokens of every process."""
    m = mask.to(weights.dtype)
    return weights * (mean_over_processes(m.sum()) / mean_over_processes((weights * m).sum()).clamp_min(1e-12))


def answer_nll(logits: LogitsLike, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean answer-token cross-entropy (weighted by token weights when given): the NLL loss."""
    return weighted_token_mean(token_ce(logits, labels), answer_mask(labels), weights)
