"""A minimal stand-in for the engine's RunContext: enough for adapters' prepare and hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

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


@dataclass
class FakeCtx:
    model: Any
    splits: dict[str, list[dict[str, torch.Tensor]]]
    out_dir: Path
    adapters: list[Any] = field(default_factory=list)
    method: Any = field(default_factory=lambda: SimpleNamespace(name="graddiff", has_retain_term=True))
    step: int = 0

    def __post_init__(self) -> None:
        self.layers = moe_layers(self.model)
        self.cfg = SimpleNamespace(seed=0)
        self.device = next(self.model.parameters()).device

    def iter_split(self, role: str, batch_size: int | None = None):
        yield from self.splits[role]


@pytest.fixture
def fake_ctx(tmp_path):
    def make(model, **splits):
        return FakeCtx(model=model, splits=splits, out_dir=tmp_path)
    return make
