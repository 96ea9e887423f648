"""Routing capture overhead: an eval forward inside `capture_routing` vs the same plain forward."""

from __future__ import annotations

from bench.common import Env, Figure, interleaved, median_ms, paired_ratio, sig
from bench.evalset import eval_context, plain_forward, sync
from moe_unlearn.models import capture_routing


def run(env: Env) -> list[Figure]:
    s = env.settings
    ctx = eval_context(env.manifest, s.eval_examples)
    batches = ctx.qa_batches("forget")

    def captured() -> None:
        with capture_routing(ctx.model):
            plain_forward(ctx, batches)

    times = interleaved({"plain": lambda: plain_forward(ctx, batches), "capture": captured},
                        repeats=s.repeats, warmup=s.warmup, sync=lambda: sync(ctx))
    detail = {"plain_ms": median_ms(times["plain"]), "capture_ms": median_ms(times["capture"]),
              "batches": len(batches), "repeats": s.repeats}
    return [Figure("forward with routing capture / plain forward", sig(paired_ratio(times, "capture", "plain")),
                   1.10, detail=detail)]
