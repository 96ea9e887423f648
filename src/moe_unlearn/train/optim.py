"""AdamW and the learning-rate schedule (linear warmup, then constant / linear / cosine decay)."""

from __future__ import annotations

import math

import torch

from moe_unlearn.train.config import TrainConfig


def total_steps(cfg: TrainConfig, forget_examples: int, batch_size: int) -> int:
    """Optimizer steps: train.max_steps if set, else epochs over the forget set."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    per_step = batch_size * cfg.grad_accum
    return max(1, math.ceil(cfg.epochs * forget_examples / per_step))


def build_optimizer(cfg: TrainConfig, params: list[torch.Tensor]) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total=total, warmup=cfg.warmup_steps, schedule=cfg.schedule)
    )
