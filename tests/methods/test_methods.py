"""Every registered method lowers forget likelihood on the embedded benchmark model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from moe_unlearn.methods import METHODS

# (method, method settings, train settings): 6 steps of 8 examples each
CASES = {
    "ga": ({}, {"lr": 1e-3}),
    "graddiff": ({}, {"lr": 1e-3}),
    "graddiff_kl": ({"retain_loss": "kl"}, {"lr": 1e-3}),
    "npo": ({}, {"lr": 1e-3}),
    "simnpo": ({}, {"lr": 3e-3}),
    "dpo": ({}, {"lr": 1e-3}),
    "rmu": ({}, {"lr": 5e-3}),
    "wga": ({}, {"lr": 1e-3}),
    "undial": ({}, {"lr": 1e-3}),
}


def test_every_registered_method_has_a_case():
    unlearners = {n for n in METHODS.names() if not METHODS.get(n).learns}
    assert unlearners <= {c.split("_")[0] for c in CASES}
    assert set(METHODS.names()) - unlearners == {"sft"}  # the one objective that learns (finetune)


def test_sft_lowers_the_nll_of_the_data_it_learns(make_ctx, forget_nll, run_steps):
    """`finetune`'s objective descends what the unlearning methods ascend (from a model that has
    forgotten part of it: 6 GA steps first)."""
    ctx, ga = make_ctx("ga", train={"max_steps": 6, "lr": 1e-3})
    run_steps(ctx, ga)
    forgotten = forget_nll(ctx)
    sft = METHODS.get("sft")(METHODS.get("sft").config_cls())
    (ctx.out_dir / "log.jsonl").unlink()
    ctx.step = 0  # six more steps, now learning
    run_steps(ctx, sft)
    assert forget_nll(ctx) < forgotten - 0.5, (forgotten, forget_nll(ctx))


@pytest.mark.parametrize("case", list(CASES))
def test_method_raises_forget_nll(make_ctx, forget_nll, run_steps, case):
    settings, train = CASES[case]
    ctx, method = make_ctx(case.split("_")[0], train={"max_steps": 6, **train}, **settings)
    before = forget_nll(ctx)
    run_steps(ctx, method)
    after = forget_nll(ctx)
    lines = [json.loads(x) for x in (ctx.out_dir / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 7))
    assert all(math.isfinite(x["loss"]) for x in lines)
    print(f"{case}: forget nll {before:.3f} -> {after:.3f}")
    assert before < 0.5  # the base model knows the forget answers
    assert after > before + 0.5, (before, after)


def test_npo_first_loss_is_2_over_beta_ln2(make_ctx, run_steps):
    """Before the first update the model IS the reference: loss = (2/beta) ln 2."""
    ctx, method = make_ctx("npo", train={"max_steps": 1}, beta=0.1, alpha=0.0)
    run_steps(ctx, method)
    first = json.loads((ctx.out_dir / "log.jsonl").read_text().splitlines()[0])
    assert first["forget_loss"] == pytest.approx(2 / 0.1 * math.log(2), rel=1e-4)
    assert abs(first["forget_logratio"]) < 1e-4


def test_dpo_first_margin_is_zero_and_refusal_is_spliced(make_ctx, run_steps):
    ctx, method = make_ctx("dpo", train={"max_steps": 1}, alpha=0.0)
    method.prepare(ctx)
    batch = next(ctx.iter_split("forget"))
    idk = method.refusal_batch(ctx, batch)
    text = ctx.tokenizer.decode(idk["input_ids"][0][idk["attention_mask"][0].bool()], skip_special_tokens=True)
    question = ctx.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] == -100][:5], skip_special_tokens=True)
    assert text.startswith(question) and text.endswith("I don't know.")
    run_steps(ctx, method)
    first = json.loads((ctx.out_dir / "log.jsonl").read_text().splitlines()[0])
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert first["forget_loss"] == pytest.approx(2 / 0.1 * math.log(2), rel=1e-4)


def test_undial_first_loss_is_cross_entropy_to_target(make_ctx):
    """At step 0 the loss is CE(softmax(z), softmax(z - beta onehot)) on the same logits."""
    from moe_unlearn.methods.undial import undial_target

    ctx, method = make_ctx("undial", train={"max_steps": 1}, alpha=0.0, beta=10.0)
    method.prepare(ctx)
    batch = next(ctx.iter_split("forget"))
    with torch.no_grad():
        logits = ctx.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    scored = batch["labels"][:, 1:] != -100  # full logits at t - 1 predict labels[t]
    pred, tgt = logits[:, :-1][scored], batch["labels"][:, 1:][scored]
    target = undial_target(pred, tgt, 10.0)
    expected = float(-(target * pred.log_softmax(-1)).sum(-1).mean())
    out = method.loss(ctx, batch, batch)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    # the target moves mass off the true token at every answer position
    p_model = pred.softmax(-1).gather(1, tgt[:, None])
    p_target = target.gather(1, tgt[:, None])
    assert bool((p_target < p_model).all()) and float(p_target.mean()) < 0.5 * float(p_model.mean())
