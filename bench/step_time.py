"""Step-time overhead of the adapters: base method vs base method + adapter, steps interleaved."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from bench.common import Env, Figure, interleaved, median_ms, paired_ratio, sig
from bench.session import sync_for, trainer_for

# (figure, base method, adapter, target): the adapter's step over the plain method's step
PAIRS = (
    ("GA+GRIP step / GA step", "ga", "grip", 1.10),
    ("GradDiff+TRACE step / GradDiff step", "graddiff", "trace", 1.05),
    ("GA+SEUF step / GA step", "ga", "seuf", 1.0),
)
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")


def step_overhead(env: Env, name: str, method: str, adapter: str, target: float,
                  manifest_overrides: list[str] | None = None, tag: str = "", *, repeats: int | None = None,
                  warmup: int | None = None) -> Figure:
    s = env.settings
    repeats, warmup = repeats or s.repeats, s.warmup if warmup is None else warmup
    work = env.work / f"steps-{method}-{adapter}{tag}"
    base = trainer_for(env.manifest, work / "base", method, [], manifest_overrides)
    with_adapter = trainer_for(env.manifest, work / adapter, method, [adapter], manifest_overrides)
    times = interleaved({"base": base.step, adapter: with_adapter.step}, repeats=repeats, warmup=warmup,
                        sync=sync_for(base))
    detail = {"base_ms": median_ms(times["base"]), f"{adapter}_ms": median_ms(times[adapter]),
              "repeats": repeats, "trainable_params": {"base": base.trainable.numel(),
                                                          adapter: with_adapter.trainable.numel()}}
    summary = with_adapter.adapters[0].summary()
    for key in ("prep_seconds", "project_ms_per_step", "trained_params", "cache_tokens", "prep_gram"):
        if key in summary:
            detail[key] = summary[key]
    return Figure(name, sig(paired_ratio(times, adapter, "base")), target, detail=detail)


def with_experts(model_dir: Path, experts: int, out: Path) -> Path:
    """The benchmark model's architecture with `experts` experts (random init, same d and top-k), saved."""
    config = AutoConfig.from_pretrained(model_dir)
    keys = [k for k in EXPERT_KEYS if hasattr(config, k)]
    for k in keys:
        setattr(config, k, experts)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def run(env: Env) -> list[Figure]:
    figures = [step_overhead(env, *pair) for pair in PAIRS]
    model_dir = env.manifest.parent / json.loads(env.manifest.read_text())["model"]
    for e in env.settings.experts:
        path = with_experts(model_dir, e, env.work / f"model-E{e}")
        fig = step_overhead(env, f"GA+GRIP step / GA step, E={e}", "ga", "grip", 1.10,
                            [f"model.path={path}"], tag=f"-E{e}")
        fig.detail["experts"] = e
        figures.append(fig)
    return figures
