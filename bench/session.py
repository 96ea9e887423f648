"""A ready-to-step Trainer for one (method, adapters) on the embedded benchmark.

Uses the engine's own `Trainer.create` (the setup half of `run_unlearning`), so the bench
times exactly the Trainer a run trains with; it skips the evaluation routing capture that a
step never reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moe_unlearn.config import apply_overrides
from moe_unlearn.train import build_config
from moe_unlearn.train.engine import Trainer


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
    trainer = Trainer.create(cfg, out_dir, progress=False, overwrite=True, eval_routing=False)
    trainer.ctx.model.train()
    return trainer


def sync_on(device: torch.device) -> Any:
    """A no-argument device barrier for honest timings on CUDA (a no-op on CPU)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def sync_for(trainer: Trainer) -> Any:
    """sync_on the Trainer's device."""
    return sync_on(trainer.ctx.device)
