"""The embedded benchmark's model and eval context, shared by the forward-only figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from moe_unlearn.data import DataConfig, load_data
from moe_unlearn.eval import EvalConfig, EvalContext
from moe_unlearn.models import load_model


def eval_context(manifest: Path, examples: int, model_dir: Path | None = None, **cfg: Any) -> EvalContext:
    """EvalContext on the benchmark's model (or `model_dir`; eval mode) with `examples` records per eval set."""
    model_dir = model_dir or manifest.parent / json.loads(manifest.read_text())["model"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_model(model_dir, device=device)
    model.eval()
    data = load_data(DataConfig(manifest=str(manifest)))
    return EvalContext(model, tok, data, EvalConfig(max_examples=examples, **cfg))


def fresh(ctx: EvalContext) -> EvalContext:
    """Same model and data, empty memo: the next metric call runs its forwards again."""
    return EvalContext(ctx.model, ctx.tokenizer, ctx.data, ctx.cfg)


def plain_forward(ctx: EvalContext, batches: list[dict[str, torch.Tensor]]) -> None:
    """One no-grad forward per batch, nothing kept: the baseline the figures divide by."""
    with torch.no_grad():
        for b in batches:
            ctx.model(input_ids=b["input_ids"].to(ctx.device), attention_mask=b["attention_mask"].to(ctx.device))


def tokens(batches: list[dict[str, torch.Tensor]]) -> int:
    return sum(int(b["attention_mask"].sum()) for b in batches)


def sync(ctx: EvalContext) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
