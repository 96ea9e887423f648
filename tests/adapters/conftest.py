"""A minimal stand-in for the engine's RunContext: enough for adapters' prepare and hooks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from moe_unlearn.core.settings import RunSettings
from moe_unlearn.models.layout import moe_layers


def random_batches(n: int, *, batch: int = 4, seq: int = 12, vocab: int = 256, seed: int = 0,
                   low: int = 3, high: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Right-padded random batches (tokens in [low, high)), answers = the second half."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(low, high or vocab, (batch, seq), generator=g)
        lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
        mask = (torch.arange(seq)[None] < lengths[:, None]).long()
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, : seq // 2] = -100
        out.append({"input_ids": ids * mask, "attention_mask": mask, "labels": labels})
    return out


def span_projector(bases) -> torch.Tensor:
    """[E, d', d'] float64 projector onto each row's protected span, whichever side the basis
    stores (nullspace.SpanBases): independent of eigenvector signs and of the zero padding."""
    b = bases.basis.double()
    inside = b @ b.transpose(1, 2)
    eye = torch.eye(b.shape[1], dtype=torch.float64)
    return torch.where(bases.complement.to(b.device)[:, None, None], eye - inside, inside)


@dataclass
class FakeCtx:
    model: Any
    splits: dict[str, list[dict[str, torch.Tensor]]]
    out_dir: Path
    step: int = 0
    trainable: Any = None  # the run's trained parameter set (core.trainable.Trainable)

    def __post_init__(self) -> None:
        self.layers = moe_layers(self.model)
        self.settings = RunSettings(seed=0, batch_size=4, loss_chunk=256, precision="fp32", grad_accum=1,
                                    load_balancing_coef=0.0)
        self.device = next(self.model.parameters()).device

    def iter_split(self, role: str, batch_size: int | None = None):
        yield from self.splits[role]


@pytest.fixture
def fake_ctx(tmp_path):
    def make(model, **splits):
        return FakeCtx(model=model, splits=splits, out_dir=tmp_path)
    return make


QUICK_EVAL = {"metrics": ["nll", "mc_acc", "stability"], "max_examples": 32, "batch_size": 32}


@pytest.fixture
def adapter_run(tiny_benchmark, tmp_path):
    """adapter_run(name, *overrides, method=...) -> metrics of a short run on the tiny benchmark."""
    from moe_unlearn.config import apply_overrides
    from moe_unlearn.train import build_config, run_unlearning

    def run(name: str, *overrides: str, method: str = "graddiff") -> dict:
        raw = {
            "method": method,
            "data": {"manifest": str(tiny_benchmark), "batch_size": 8, "retain_batch_size": 8},
            "train": {"lr": 1e-3, "max_steps": 2, "checkpoint_every": 0},
            "eval": dict(QUICK_EVAL),
        }
        cfg = build_config(apply_overrides(raw, list(overrides)))
        return run_unlearning(cfg, out_dir=tmp_path / name, progress=False)

    return run
