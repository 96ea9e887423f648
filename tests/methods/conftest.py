"""A RunContext on the embedded "tiny" benchmark model, without the data/eval layers' loaders.

`make_ctx(name, **settings)` gives (context, method) whose forget/retain splits are the
benchmark's QA records; `run_steps(ctx, method)` runs the engine's own Trainer for
cfg.train.max_steps steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from moe_unlearn.config import build
from moe_unlearn.data import PairedBatches, encode_qa
from moe_unlearn.core import losses
from moe_unlearn.methods import METHODS
from moe_unlearn.models import load_model, moe_layers
from moe_unlearn.core.context import RunContext
from moe_unlearn.methods.base import Method
from moe_unlearn.train.engine import Trainer, build_trainable
from moe_unlearn.train.config import TrainConfig, run_settings


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def bench(tiny_benchmark):
    root = Path(tiny_benchmark).parent
    manifest = json.loads(Path(tiny_benchmark).read_text())
    return root, manifest


@pytest.fixture
def make_ctx(bench, tmp_path):
    root, manifest = bench

    def make(name: str, *, train: dict | None = None, **settings) -> tuple[RunContext, Method]:
        torch.manual_seed(0)
        model, tok = load_model(root / manifest["model"])
        splits = {}
        for role in ("forget", "retain"):
            recs = read_jsonl(root / manifest[role]["qa"])[:40]
            splits[role] = [dict(encode_qa(tok, r["question"], r["answer"], max_length=48), index=i)
                            for i, r in enumerate(recs)]
        method_cls = METHODS.get(name)
        train_cfg = build(TrainConfig, {"max_steps": 5, "checkpoint_every": 0, **(train or {})})
        cfg = SimpleNamespace(train=train_cfg, data=SimpleNamespace(batch_size=8), seed=0, method=name)
        ctx = RunContext(model=model, tokenizer=tok, layers=moe_layers(model), settings=run_settings(cfg), data=None,
                         splits=splits, device=torch.device("cpu"), out_dir=tmp_path)
        ctx.config = cfg  # the whole config, for the engine's Trainer (run_steps)
        return ctx, method_cls(build(method_cls.config_cls, settings, name))

    return make


@torch.no_grad()
def _forget_nll(ctx: RunContext) -> float:
    """Mean answer-token NLL over the forget split."""
    total, count = 0.0, 0
    for batch in ctx.iter_split("forget"):
        logits = ctx.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, n = losses.sequence_nll(logits, batch["labels"])
        total, count = total + float(nll.sum()), count + int(n.sum())
    return total / count


def _run_steps(ctx: RunContext, method: Method) -> Trainer:
    """prepare -> trainable -> the engine's Trainer for cfg.train.max_steps steps."""
    ctx.model.eval()
    method.prepare(ctx)
    ctx.trainable = build_trainable(ctx, method, [], ctx.config.train)
    if method.needs(method.cfg).reference:
        ctx.trainable.keep_originals()
    pairs = PairedBatches(ctx.splits["forget"], ctx.splits["retain"], batch_size=8, retain_batch_size=8,
                          seed=0, pad_id=ctx.pad_id)
    trainer = Trainer(ctx, ctx.config, method, [], pairs, Accelerator(cpu=True), progress=False)
    trainer.log_path.write_text("")
    trainer.train()
    return trainer


@pytest.fixture
def forget_nll():
    return _forget_nll


@pytest.fixture
def run_steps():
    return _run_steps
