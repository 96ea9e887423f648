"""The one place for the loss arithmetic methods, adapters and metrics share.

Token-level tensors are ALIGNED WITH LABELS: entry [b, t] is the loss of predicting
labels[b, t] from logits[b, t - 1], so position 0 is always masked out. This keeps token
weights (TRACE, [B, S]) and answer masks in the same frame as the batch.

Means over tokens are GLOBAL means: a process divides its own sum by the mean over processes
of the token counts, so the gradient average data parallelism takes is exactly the gradient of
the mean over every process's tokens (one process with the global batch gives the same loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moe_unlearn.core.dist import mean_over_processes

IGNORE = -100


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """[B, S] bool: positions whose token is predicted and scored (labels != -100, t > 0)."""
    mask = labels != IGNORE
    mask[:, 0] = False
    return mask


def _shift_right(x: torch.Tensor) -> torch.Tensor:
    """[B, S-1, ...] predictions for positions 1..S-1 -> [B, S, ...] with a zero at t = 0."""
    pad = torch.zeros_like(x[:, :1])
    return torch.cat([pad, x], dim=1)


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy [B, S] (0 off answer tokens) from logits [B, S, V], labels [B, S]."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view_as(shift_labels)
    return _shift_right(ce)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def token_kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(pi_ref || pi_theta) per token [B, S], aligned with labels (position 0 is 0)."""
    ref_logp = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(dim=-1)
    return _shift_right(kl)


def masked_kl(
    ref_logits: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean KL(pi_ref || pi_theta) over answer tokens only (the public code averages all tokens)."""
    return weighted_token_mean(token_kl(ref_logits, logits), answer_mask(labels), weights)


def normalise_weights(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale [B, S] weights so they average 1 over the masked (answer) tokens of every process."""
    m = mask.to(weights.dtype)
    return weights * (mean_over_processes(m.sum()) / mean_over_processes((weights * m).sum()).clamp_min(1e-12))


def answer_nll(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean answer-token cross-entropy (weighted by token weights when given): the NLL loss."""
    return weighted_token_mean(token_ce(logits, labels), answer_mask(labels), weights)
