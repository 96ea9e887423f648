"""Relearning attack: fine-tune a COPY of the model on part of the forget set and watch how fast
the forget metrics come back (knowledge that returns in a few steps was hidden, not erased).

The first ceil(fraction x N) forget QA examples are trained on (AdamW, mean answer-token NLL,
model kept in eval mode so routing stays deterministic); the curve reports nll / token_acc /
mc_acc on the whole forget set and token_acc on the examples NOT trained on ("unseen").
Memory: one full copy of the model and its AdamW state.
"""

from __future__ import annotations

import copy
import math

import torch

from moe_unlearn.data.tokenize import to_device
from moe_unlearn.eval.batches import make_batches, qa_examples
from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import nanmean
from moe_unlearn.core.chunked import lm_forward
from moe_unlearn.core.losses import answer_nll


def _point(model: torch.nn.Module, ctx: EvalContext, step: int, n_train: int) -> dict[str, float | int | None]:
    sub = EvalContext(model, ctx.tokenizer, ctx.data, ctx.cfg)
    acc = sub.result("token_acc", "forget")
    mc = sub.result("mc_acc", "forget")
    return {
        "step": step,
        "nll": sub.result("nll", "forget").value,
        "token_acc": acc.value,
        "token_acc_unseen": nanmean(acc.per_example[n_train:]),
        "mc_acc": mc.value if mc else None,
    }


def relearn_curve(ctx: EvalContext) -> list[dict[str, float | int | None]]:
    """Forget metrics at step 0, every relearn.eval_every steps and at the last step."""
    rc = ctx.cfg.relearn
    recs = ctx.records("forget", "qa") or []
    n_train = math.ceil(rc.fraction * len(recs))
    train = make_batches(qa_examples(ctx.tokenizer, recs[:n_train], ctx.cfg), rc.batch_size, ctx.pad_id)
    model = copy.deepcopy(ctx.model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=rc.lr, weight_decay=0.0)
    device = next(model.parameters()).device
    curve = [_point(model, ctx, 0, n_train)]
    for step in range(1, rc.steps + 1):
        batch = to_device(train[(step - 1) % len(train)], device)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        loss = answer_nll(lm_forward(model, inputs, chunk=ctx.cfg.loss_chunk)[1], batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % rc.eval_every == 0 or step == rc.steps:
            curve.append(_point(model, ctx, step, n_train))
    del model, opt
    return curve


@metric("relearn", higher_is_better=False, scope="global", multi_process=False,
        detail_keys=("curve", "lr", "fraction"))
def relearn(ctx: EvalContext) -> MetricResult | None:
    """Relearning attack curve on the forget set; value = forget token_acc after the last step."""
    if not ctx.records("forget", "qa"):
        return None
    curve = relearn_curve(ctx)
    return MetricResult(curve[-1]["token_acc"], [], {"curve": curve, "lr": ctx.cfg.relearn.lr, "fraction": ctx.cfg.relearn.fraction})
