"""A ready-to-step Trainer for one (method, adapters) on the embedded benchmark.

Mirrors `run_unlearning` up to the first step (check -> method and adapter prepare on the
original model -> trainable -> Trainer) and stops there: the bench times single steps, not
whole runs, and skips the evaluation routing capture that a step never reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moe_unlearn.config import apply_overrides
from moe_unlearn.data import load_data
from moe_unlearn.train import build_config
from moe_unlearn.train.engine import Trainer, build_trainable, model_path_of, setup


def bench_config(manifest: Path, method: str, adapters: list[str], overrides: list[str] | None = None) -> dict[str, Any]:
    """Raw unlearn config: the demo's batch sizes, no periodic eval or checkpoints."""
    raw = {
        "method": method, "adapters": adapters, "seed": 0,
        "data": {"manifest": str(manifest), "train_format": "qa", "batch_size": 8, "retain_batch_size": 8},
        "train": {"lr": 5e-5, "max_steps": 1000, "eval_every": 0, "checkpoint_every": 0},
        "eval": {"metrics": ["nll"], "max_examples": 8},
    }
    return apply_overrides(raw, overrides or [])


def trainer_for(manifest: Path, out_dir: Path, method: str, adapters: list[str],
                overrides: list[str] | None = None) -> Trainer:
    """A Trainer whose `.step()` runs one optimizer step (model in train mode)."""
    cfg = build_config(bench_config(manifest, method, adapters, overrides))
    data = load_data(cfg.data)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx, pairs = setup(cfg, out_dir, data, model_path_of(cfg, data))
    ctx.model.eval()
    for a in ctx.adapters:
        a.check(ctx)
    ctx.method.prepare(ctx)
    for a in ctx.adapters:
        a.prepare(ctx)
    trainable = ctx.trainable = build_trainable(ctx)
    if ctx.method.uses_reference() or any(getattr(a, "needs_reference", False) for a in ctx.adapters):
        trainable.keep_originals()
    trainer = Trainer(ctx, trainable, pairs, progress=False)
    ctx.model.train()
    return trainer


def sync_for(trainer: Trainer) -> Any:
    """A no-argument device barrier for honest timings on CUDA (a no-op on CPU)."""
    device = trainer.ctx.device
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
