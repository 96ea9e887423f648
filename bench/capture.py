"""Routing capture overhead: an eval forward inside `capture_routing` vs the same plain forward."""

from __future__ import annotations

from pathlib import Path

from bench.common import Env, Figure, interleaved, median_ms, paired_ratio, sig
from bench.evalset import eval_context, plain_forward, sync
from moe_unlearn.models import capture_routing


def run(env: Env) -> list[Figure]:
    return [capture_overhead(env)]


def capture_overhead(env: Env, model_dir: Path | None = None, label: str = "", *, examples: int | None = None,
                     repeats: int | None = None, warmup: int | None = None) -> Figure:
    """Eval forwards inside capture_routing vs the same plain forwards (of `model_dir`, default the benchmark's)."""
    s = env.settings
    ctx = eval_context(env.manifest, examples or s.eval_examples, model_dir)
    batches = ctx.qa_batches("forget")

    def captured() -> None:
        with capture_routing(ctx.model):
            plain_forward(ctx, batches)

    repeats, warmup = repeats or s.repeats, s.warmup if warmup is None else warmup
    times = interleaved({"plain": lambda: plain_forward(ctx, batches), "capture": captured},
                        repeats=repeats, warmup=warmup, sync=lambda: sync(ctx))
    detail = {"plain_ms": median_ms(times["plain"]), "capture_ms": median_ms(times["capture"]),
              "batches": len(batches), "repeats": repeats}
    return Figure(f"forward with routing capture / plain forward{label}", sig(paired_ratio(times, "capture", "plain")),
                  1.10, detail=detail)
