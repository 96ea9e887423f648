"""Throughput of the expensive evaluations: tokens/s of MC scoring and membership scoring.

Each is compared with a plain no-grad forward over the same batches, so the ratio (<= 1) is
what the scoring itself adds: tokenising, log-softmax over the vocabulary, Min-k%++ moments,
per-example splitting, zlib and AUCs. Reported, no target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bench import evalset
from bench.common import Env, Figure, interleaved, paired_ratio, sig
from moe_unlearn.eval.batches import make_batches, mc_examples, text_examples

SPLITS = ("forget", "holdout")


def throughput(env: Env, name: str, scored: Callable[[evalset.EvalContext], object],
               batches: Callable[[evalset.EvalContext], list[dict]], *, model_dir: Path | None = None,
               examples: int | None = None, repeats: int | None = None, warmup: int | None = None,
               target: float | None = None) -> Figure:
    s = env.settings
    ctx = evalset.eval_context(env.manifest, examples or s.eval_examples, model_dir)
    bl = batches(ctx)
    n = evalset.tokens(bl)
    repeats, warmup = repeats or s.repeats, s.warmup if warmup is None else warmup
    times = interleaved({"plain": lambda: evalset.plain_forward(ctx, bl), "scored": lambda: scored(evalset.fresh(ctx))},
                        repeats=repeats, warmup=warmup, sync=lambda: evalset.sync(ctx))
    ratio = paired_ratio(times, "plain", "scored")  # = scored tokens/s over plain tokens/s
    detail = {"tokens": n, "scored_tokens_per_s": round(n / min(times["scored"]), 1),
              "plain_tokens_per_s": round(n / min(times["plain"]), 1), "repeats": repeats}
    return Figure(f"{name} tokens/s / plain forward tokens/s", sig(ratio), target,
                  op="report" if target is None else ">=", detail=detail)


def mc_batches(ctx: evalset.EvalContext) -> list[dict]:
    examples, _ = mc_examples(ctx.tokenizer, ctx.records("forget", "mc"), ctx.cfg)
    return make_batches(examples, ctx.cfg.batch_size, ctx.pad_id)


def text_batches(ctx: evalset.EvalContext) -> list[dict]:
    out = []
    for split in SPLITS:
        examples = text_examples(ctx.tokenizer, ctx.records(split, "text"), ctx.cfg)
        out += make_batches(examples, ctx.cfg.batch_size, ctx.pad_id)
    return out


def run(env: Env) -> list[Figure]:
    return figures(env)


def figures(env: Env, label: str = "", **kwargs: object) -> list[Figure]:
    """MC scoring and membership scoring over plain forwards (kwargs: see `throughput`)."""
    return [
        throughput(env, f"MC scoring{label}", lambda c: c.mc_loglik("forget"), mc_batches, **kwargs),
        throughput(env, f"membership scoring (LOSS, zlib, Min-k%, Min-k%++){label}", lambda c: c.result("privacy"),
                   text_batches, **kwargs),
    ]
