"""Where the time goes in one engine step at full depth: forward, backward, optimizer, adapters, host/other.

    python -m bench.profile_step [--methods ga graddiff] [--adapters grip ...] [--steps N] [--threads N]

Builds full_depth's model (16 layers, 64 experts, top-8 at CPU width; `--smoke`: its small
one), wraps the phases of `Trainer.step` in named profiler ranges and runs torch.profiler over
`--steps` steps after `--warmup`. A phase's time is its ranges' wall time less the phases nested
in it (an adapter's loss term inside the forward counts as adapters). host/other is the rest of
the step: batches, logging numbers, the loop itself. On CUDA each phase ends with a synchronize,
so the rows are device time, not launch time.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import transformers
from torch.autograd.profiler import FunctionEvent

from bench.full_depth import DEPTH, model_from
from bench.session import sync_for, trainer_for
from moe_unlearn.benchmark import cached_benchmark
from moe_unlearn.train.engine import Trainer

PHASES = ("forward", "backward", "optimizer", "adapters", "host/other")
PREFIX = "phase/"


def _ranged(fn: Callable[..., Any], phase: str, sync: Callable[[], None]) -> Callable[..., Any]:
    """fn inside a profiler range named after its phase (synchronised on CUDA: device time)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function(PREFIX + phase):
            out = fn(*args, **kwargs)
            sync()
            return out

    return wrapped


def instrument(trainer: Trainer) -> Callable[[], None]:
    """Name the phases of `trainer.step` (instance attributes only; the engine is untouched);
    returns the step, itself a range (the total)."""
    sync = sync_for(trainer)
    acc = trainer.accelerator
    trainer.micro_step = _ranged(trainer.micro_step, "forward", sync)
    acc.backward = _ranged(acc.backward, "backward", sync)
    acc.clip_grad_norm_ = _ranged(acc.clip_grad_norm_, "optimizer", sync)
    trainer.optimizer.step = _ranged(trainer.optimizer.step, "optimizer", sync)
    trainer.optimizer.zero_grad = _ranged(trainer.optimizer.zero_grad, "optimizer", sync)
    trainer.trainable.write_back = _ranged(trainer.trainable.write_back, "optimizer", sync)
    trainer.scheduler.step = _ranged(trainer.scheduler.step, "optimizer", sync)
    for a in trainer.adapters:
        for hook in ("loss_terms", "retain_token_weights", "after_step"):
            setattr(a, hook, _ranged(getattr(a, hook), "adapters", sync))
    return _ranged(trainer.step, "step", sync)


def _nested_phases(event: FunctionEvent) -> list[FunctionEvent]:
    """The outermost phase ranges below `event`."""
    found = []
    for child in event.cpu_children:
        found += [child] if child.name.startswith(PREFIX) else _nested_phases(child)
    return found


def phase_ms(events: list[FunctionEvent], steps: int) -> dict[str, float]:
    """Mean ms per step of each phase, exclusive of the phases nested in it; host/other is the
    step's remainder."""
    totals = dict.fromkeys([*PHASES, "step"], 0.0)
    for e in events:
        if e.name.startswith(PREFIX):
            inner = sum(c.time_range.elapsed_us() for c in _nested_phases(e))
            totals[e.name.removeprefix(PREFIX)] += (e.time_range.elapsed_us() - inner) / 1000
    totals["host/other"] += totals.pop("step")
    return {k: v / steps for k, v in totals.items()}


def top_ops(prof: torch.profiler.profile, steps: int, n: int) -> list[tuple[str, float]]:
    """The n aten ops with the most self time, ms per step."""
    rows = [r for r in prof.key_averages() if r.key.startswith("aten::")]
    rows.sort(key=lambda r: r.self_cpu_time_total, reverse=True)
    return [(r.key, r.self_cpu_time_total / 1000 / steps) for r in rows[:n]]


def profile(trainer: Trainer, *, steps: int, warmup: int) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Phase ms per step and the top ops of `steps` profiled steps after `warmup` plain ones."""
    step = instrument(trainer)
    for _ in range(warmup):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if trainer.ctx.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    return phase_ms(prof.events(), steps), top_ops(prof, steps, 8)


def table(columns: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per phase, ms and % of the step for each profiled run."""
    head = "| phase | " + " | ".join(f"{c} ms | {c} %" for c in columns) + " |"
    lines = [head, "|---" * (1 + 2 * len(columns)) + "|"]
    for phase in [*PHASES, "step"]:
        cells = []
        for ms in columns.values():
            total = sum(ms.values())
            value = total if phase == "step" else ms[phase]
            cells.append(f"{value:.1f} | {100 * value / total:.0f}")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["ga", "graddiff"])
    p.add_argument("--adapters", nargs="*", default=[], help="also profile METHOD+ADAPTER for the first method")
    p.add_argument("--steps", type=int, default=5, help="profiled steps (the rows are means over them)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--smoke", action="store_true", help="full_depth's smoke geometry on the tiny benchmark")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    manifest = cached_benchmark("tiny" if args.smoke else "default", seed=0)
    runs = [(m, []) for m in args.methods] + [(args.methods[0], [a]) for a in args.adapters]
    columns, ops = {}, {}
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-profile-") as tmp:
        work = Path(tmp)
        path = model_from(manifest, DEPTH["smoke" if args.smoke else "full"], work / "model")
        for method, adapters in runs:
            name = "+".join([method, *adapters])
            trainer = trainer_for(manifest, work / name, method, adapters, [f"model.path={path}", "train.lr=1e-5"])
            columns[name], ops[name] = profile(trainer, steps=args.steps, warmup=args.warmup)
            del trainer
    print(table(columns))
    for name, top in ops.items():
        print(f"\n{name}, top ops by self time (ms per step): " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
