"""What every figure shares: the result row, the bench settings, interleaved timing.

Ratios are measured inside ONE run with the two variants interleaved (A B B A ...), so load
from other processes hits both alike; a figure is the median of the per-pair ratios.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Figure:
    """One table row: `measured` compared with `target` by `op` ("<=", ">=", or "report": no target)."""

    name: str
    measured: float
    target: float | None = None
    op: str = "<="
    unit: str = "ratio"
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        if self.target is None or self.op == "report":
            return None
        return self.measured >= self.target if self.op == ">=" else self.measured <= self.target

    def row(self) -> dict[str, Any]:
        return {"figure": self.name, "measured": self.measured, "target": self.target, "op": self.op,
                "unit": self.unit, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class Settings:
    """Sizes of one bench run; `full` is the real bench, `smoke` only checks the plumbing."""

    preset: str  # embedded benchmark preset the step figures train on
    repeats: int  # timed pairs per ratio
    warmup: int  # untimed calls of each variant first
    experts: tuple[int, ...]  # E values of the GRIP scaling figure
    geometry: dict[str, int]  # GRIP projector figure: d, experts, top_k, layers, tokens, sampled_experts
    demo_steps: int | None  # None: the demo recipe's own step budget
    eval_examples: int  # examples per eval set in the throughput figure
    # real-geometry figures: batch, timing rounds, trimmed expert intermediate size, GRIP cache, eval examples
    real: dict[str, int]


SETTINGS = {
    "full": Settings(preset="default", repeats=15, warmup=3, experts=(8, 16, 32, 64),
                     geometry={"d": 2048, "experts": 128, "top_k": 8, "layers": 48, "tokens": 32768,
                               "sampled_experts": 4},
                     demo_steps=None, eval_examples=64,
                     real={"batch": 4, "repeats": 4, "warmup": 1, "intermediate": 128, "grip_cache_tokens": 1024,
                           "eval_examples": 8, "text_batch": 16, "loss_chunk": 64}),
    "smoke": Settings(preset="tiny", repeats=2, warmup=1, experts=(4,),
                      geometry={"d": 64, "experts": 8, "top_k": 2, "layers": 4, "tokens": 512, "sampled_experts": 4},
                      demo_steps=2, eval_examples=8,
                      real={"batch": 2, "repeats": 1, "warmup": 0, "intermediate": 32, "grip_cache_tokens": 64,
                            "eval_examples": 4, "text_batch": 4, "loss_chunk": 16}),
}


@dataclass
class Env:
    """Run-wide inputs every figure receives."""

    settings: Settings
    manifest: Path | None  # the embedded benchmark the step figures use (None: no group run needs it)
    work: Path  # scratch directory (run outputs, temporary models)


def interleaved(variants: dict[str, Callable[[], Any]], *, repeats: int, warmup: int,
                sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each variant, calls interleaved (order reversed every other round)."""
    names = list(variants)
    for _ in range(warmup):
        for n in names:
            variants[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else reversed(names):
            sync()
            t0 = time.perf_counter()
            variants[n]()
            sync()
            times[n].append(time.perf_counter() - t0)
    return times


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of times[num][i] / times[den][i]."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def median_ms(times: list[float]) -> float:
    return round(1000 * statistics.median(times), 3)


def sig(x: float, digits: int = 4) -> float:
    """x rounded to `digits` significant figures (tiny smoke values must not round to 0)."""
    return float(f"{x:.{digits}g}") if x and math.isfinite(x) else x


def step_tokens(pairs: Any, batches: range) -> float:
    """Mean forget + retain tokens per step over the batches (by step index) the timed steps read."""
    return sum(int(b["attention_mask"].sum()) for i in batches for b in pairs.batch(i) if b is not None) / len(batches)


def active_parameters(model: Any, top_k: int, experts: int) -> int:
    """Parameters one token runs through: the experts' at top_k / experts of their count."""
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    return sum(p.numel() for p in model.parameters()) - expert + expert * top_k // experts
