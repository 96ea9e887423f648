"""Issue 26 item 3: each candidate speed-up of the engine step at full depth, timed against the
plain loop in ONE interleaved run, so before and after share the machine's load.

    python -m bench.step_candidates [--methods ga graddiff] [--repeats N] [--autocast] [--experts] [--compile] [--smoke]

Variants of the optimizer are set on a built Trainer through its param groups (torch's AdamW
reads `fused` and `foreach` from them at every step); per-tensor is torch's default on CPU
and what the engine ran before. For a method with a retain term, one variant forwards the
forget and retain batches separately (the engine before ctx.joint). `--autocast` adds a pair with bf16 weights: the engine at
train.precision=bf16 (accelerate's autocast) against fp32 (no autocast, same weights).
`--experts` times the engine's step with each experts implementation transformers offers that
runs without extra kernels (deepgemm and sonicmoe need CUDA and packages of their own).
`--compile` times the engine's step with the model's forward compiled (`torch.compile`, dynamic
shapes: every batch has its own length) against the same engine uncompiled, after a first
steps' compilation it reports in seconds, and the loss's rows (the label log-probability of
`core.chunked`, forward and backward at one step's shape) compiled against eager.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import transformers

from bench.common import interleaved, median_ms, paired_ratio
from bench.full_depth import DEPTH, model_from
from bench.plain_loop import PlainLoop
from bench.session import trainer_for
from moe_unlearn.benchmark import cached_benchmark
from moe_unlearn.core.chunked import label_logprobs
from moe_unlearn.train.engine import Trainer

# grouped_mm first: what models.loading sets on CPU, the ratios' base
EXPERTS = ("grouped_mm", "eager", "batched_mm")
OPTIMIZERS = {"per-tensor AdamW": dict(fused=None, foreach=False), "foreach AdamW": dict(fused=None, foreach=True),
              "fused AdamW": dict(fused=True, foreach=None)}


def overrides(model: Path) -> list[str]:
    """What every variant's run sets: the full-depth model and a small learning rate."""
    return [f"model.path={model}", "train.lr=1e-5"]


def with_optimizer(trainer: Trainer, flags: dict[str, bool | None]) -> Trainer:
    """The trainer, its AdamW switched to the given implementation."""
    for group in trainer.optimizer.param_groups:
        group.update(flags)
    return trainer


def zero_grad_keeping_tensors(trainer: Trainer) -> Trainer:
    """The trainer, zeroing gradients in place instead of dropping them (set_to_none=False)."""
    zero = trainer.optimizer.zero_grad
    trainer.optimizer.zero_grad = lambda set_to_none=True: zero(set_to_none=False)
    return trainer


def separate_forwards(trainer: Trainer) -> Trainer:
    """The trainer, forwarding its forget and retain batches one at a time (as before ctx.joint)."""
    trainer.joint_forward = False
    return trainer


def variants(manifest: Path, work: Path, model: Path, method: str) -> dict[str, Callable[[], None]]:
    """name -> step: the plain loop, the optimizer variants, set_to_none=False (on fused AdamW) and,
    for a method with a retain term, separate forget and retain forwards (on fused AdamW)."""
    common = overrides(model)
    steps: dict[str, Callable[[], None]] = {}
    for name, flags in OPTIMIZERS.items():
        steps[name] = with_optimizer(trainer_for(manifest, work / f"{method}-{name}", method, [], common), flags).step
    kept = with_optimizer(trainer_for(manifest, work / f"{method}-zero", method, [], common), OPTIMIZERS["fused AdamW"])
    steps["fused AdamW, zero_grad(set_to_none=False)"] = zero_grad_keeping_tensors(kept).step
    apart = trainer_for(manifest, work / f"{method}-apart", method, [], common)
    if apart.joint_forward:
        steps["fused AdamW, separate forget and retain forwards"] = separate_forwards(apart).step
    steps["plain loop"] = PlainLoop.load(model, method, kept).step
    return steps


def autocast_pair(manifest: Path, work: Path, model: Path) -> dict[str, Callable[[], None]]:
    """GA on bf16 weights, with and without accelerate's bf16 autocast."""
    common = [*overrides(model), "model.dtype=bfloat16"]
    return {f"bf16 weights, precision={p}": trainer_for(manifest, work / f"ga-{p}", "ga", [],
                                                        [*common, f"train.precision={p}"]).step
            for p in ("bf16", "fp32")}


def experts_variants(manifest: Path, work: Path, model: Path, method: str) -> dict[str, Callable[[], None]]:
    """The engine's step of `method` with each experts implementation in EXPERTS."""
    steps = {}
    for impl in EXPERTS:
        trainer = trainer_for(manifest, work / f"{method}-experts-{impl}", method, [], overrides(model))
        trainer.ctx.model.set_experts_implementation(impl)  # read at every experts forward
        steps[f"experts {impl}"] = trainer.step
    return steps


def compile_variants(manifest: Path, work: Path, model: Path, method: str,
                     warmup: int) -> tuple[dict[str, Callable[[], None]], float]:
    """The engine's step of `method` uncompiled and with its model's forward compiled; the seconds
    the compiled engine's first `warmup` steps took (compilation included)."""
    plain = trainer_for(manifest, work / f"{method}-eager", method, [], overrides(model))
    compiled = trainer_for(manifest, work / f"{method}-compiled", method, [], overrides(model))
    compiled.ctx.model.compile(dynamic=True)
    start = time.perf_counter()
    for _ in range(warmup):
        compiled.step()
    return {"eager": plain.step, "model compiled": compiled.step}, time.perf_counter() - start


def loss_variants(labels: torch.Tensor, vocab: int) -> dict[str, Callable[[], torch.Tensor]]:
    """The label log-probability of a batch's rows ([batch, length, vocab] random logits), forward
    and backward, eager and compiled; each call returns the logits' gradient."""
    logits = torch.randn(*labels.shape, vocab, generator=torch.Generator().manual_seed(0), requires_grad=True)
    compiled = torch.compile(label_logprobs, dynamic=True)

    def run(fn: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
        return lambda: torch.autograd.grad(fn(logits, labels).sum(), logits)[0]

    return {"loss eager": run(label_logprobs), "loss compiled": run(compiled)}


def report(title: str, times: dict[str, list[float]], base: str) -> str:
    """Markdown: ms per step and the paired ratio to `base` of every variant."""
    lines = [f"{title}", "", f"| variant | ms per step | / {base} |", "|---|---|---|"]
    lines += [f"| {n} | {median_ms(t):.1f} | {paired_ratio(times, n, base):.3f} |" for n, t in times.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.step_candidates", description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["ga", "graddiff"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--autocast", action="store_true", help="also time bf16 autocast against none on bf16 weights")
    p.add_argument("--experts", action="store_true", help="also time the engine with each experts implementation")
    p.add_argument("--compile", action="store_true", help="also time the engine with its model's forward compiled")
    p.add_argument("--smoke", action="store_true", help="full_depth's smoke geometry on the tiny benchmark")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    manifest = cached_benchmark("tiny" if args.smoke else "default", seed=0)
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-candidates-") as tmp:
        work = Path(tmp)
        model = model_from(manifest, DEPTH["smoke" if args.smoke else "full"], work / "model")
        for method in args.methods:
            times = interleaved(variants(manifest, work, model, method), repeats=args.repeats, warmup=args.warmup)
            print(report(f"{method}: engine variants and the plain loop, interleaved", times, "plain loop") + "\n")
        if args.experts:
            for method in args.methods:
                times = interleaved(experts_variants(manifest, work, model, method), repeats=args.repeats,
                                    warmup=args.warmup)
                print(report(f"{method}: the engine with each experts implementation", times,
                             f"experts {EXPERTS[0]}") + "\n")
        if args.compile:
            for method in args.methods:
                steps, seconds = compile_variants(manifest, work, model, method, args.warmup)
                times = interleaved(steps, repeats=args.repeats, warmup=0)
                print(report(f"{method}: the engine with its model compiled (the first {args.warmup} compiled steps "
                             f"took {seconds:.1f} s)", times, "eager") + "\n")
            trainer = trainer_for(manifest, work / "loss", "ga", [], overrides(model))
            vocab = trainer.ctx.model.config.vocab_size
            steps = loss_variants(trainer.pairs.batch(0)[0]["labels"], vocab)  # one step's forget rows
            times = interleaved(steps, repeats=args.repeats * 10, warmup=args.warmup)
            print(report(f"the loss's rows (label log-probability, vocabulary {vocab}), forward and backward",
                         times, "loss eager") + "\n")
        if args.autocast:
            times = interleaved(autocast_pair(manifest, work, model), repeats=args.repeats, warmup=args.warmup)
            print(report("ga on bf16 weights: autocast or not", times, "bf16 weights, precision=fp32"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
