"""bench.full_depth at a whole model's real geometry: the engine against the plain loop, one after the other.

    python -m bench.run --only full_depth_gpu        (scripts/gpu_check.sh runs it on a lent GPU)

bench.full_depth interleaves the engine and the plain loop in one process at a CPU-sized width.
At OLMoE-1B-7B's real geometry (6.92B parameters, bf16) the two cannot both hold a model and its
optimizer state on one GPU, so each method runs the engine, then (the engine released) the plain
loop on the same batches with a model built from the same seed, as the issue's H200 measurement
ran each in a fresh process. The setup is that measurement's: forget 8 x 256 tokens (+ retain
8 x 256; MUSE-News fixture text chunked to 256 tokens, bench.rehearsal's fixtures), AdamW lr
1e-5, clip 1.0, every parameter, bf16 weights, transformers' default experts implementation.
The plain loop runs no autocast over its bf16 weights; the engine runs train.precision bf16's.

Per variant: the median of `steps` timed optimizer steps after two warm-up steps, the peak of one
more step (bench.memory.peak_bytes: torch.cuda.max_memory_allocated on CUDA), tokens/s (forget +
retain tokens of the batches) and model TFLOP/s (6 x active parameters x tokens). Without a GPU
it runs at bench.rehearsal's CPU width (seconds: the plumbing, not the targets).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable

import torch

from bench import rehearsal
from bench.common import Env, Figure, active_parameters, interleaved, sig, step_tokens
from bench.full_depth import PEAK_TARGET, STEP_TARGET
from bench.plain_loop import PlainLoop
from bench.memory import peak_bytes
from bench.session import sync_for, sync_on
from moe_unlearn.config import resolve_yaml
from moe_unlearn.models.tiny import tiny_tokenizer
from moe_unlearn.train.config import build_config
from moe_unlearn.train.engine import Trainer

MODEL = "allenai/OLMoE-1B-7B-0924"  # models/memory.py GEOMETRY
RECIPE = "muse_news"  # text rows chunked to max_length: every row is max_length tokens long
SETUP = {"batch": 8, "max_length": 256, "lr": 1e-5, "max_grad_norm": 1.0}  # the H200 measurement
# ours: the three the H200 measurement compared with open-unlearning's trainers; the CPU
# group (bench.full_depth) runs every base method, a lent GPU's minutes go to the real geometry
METHODS = tuple((m, STEP_TARGET) for m in ("ga", "graddiff", "npo"))
TOKENS_TARGET = 1.3  # GradDiff and NPO tokens/s over the plain loop's at the recipes' shapes (issue 26)
WARMUP = 2
NEEDS_BENCHMARK = False  # its data are the fixtures: bench.run builds no embedded benchmark for it


def run_config(method: str, scale: str, model_dir: Path, work: Path, device: str) -> dict[str, Any]:
    """The recipe's raw config at the measurement's setup (bench.rehearsal shrinks it at CPU scale)."""
    recipe = resolve_yaml(rehearsal.RECIPES_DIR / f"{RECIPE}.yaml")
    recipe["data"].update(batch_size=SETUP["batch"], retain_batch_size=SETUP["batch"], max_length=SETUP["max_length"])
    raw = rehearsal.run_config(recipe, scale, model_dir, work, device)
    raw.update(method=method, adapters=[])
    raw["train"].update(lr=SETUP["lr"], max_grad_norm=SETUP["max_grad_norm"], grad_accum=1, params=["all"])
    return raw


def measure(step: Callable[[], Any], sync: Callable[[], None], steps: int, device: torch.device) -> dict[str, Any]:
    """Median step seconds after the warm-up, then the peak of one more step."""
    times = interleaved({"step": step}, repeats=steps, warmup=WARMUP, sync=sync)["step"]
    return {"step_s": statistics.median(times), **peak_bytes(step, device)}


def engine_for(method: str, scale: str, work: Path) -> tuple[Trainer, Any, Callable[[], torch.nn.Module]]:
    """The method's Trainer on a random model of the geometry (train mode), its geometry config and
    a maker of the same model again (seed 0) for the plain loop."""
    device = torch.device("cuda" if scale == "full" else "cpu")
    tok = tiny_tokenizer()
    config = rehearsal.model_geometry(MODEL, scale, tok)
    config.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    cfg = build_config(run_config(method, scale, work / "model", work, device.type))
    with rehearsal.handed_over(rehearsal.build_model(config, cfg.model.dtype, device), tok):
        trainer = Trainer.create(cfg, work / f"run-{method}", progress=False, overwrite=True, eval_routing=False)
    trainer.ctx.model.train()
    return trainer, config, lambda: rehearsal.build_model(config, cfg.model.dtype, device).train()


def compare(method: str, scale: str, steps: int, work: Path) -> dict[str, Any]:
    """Engine, then plain loop, of one method: their step times and peaks, tokens per step."""
    trainer, config, remake = engine_for(method, scale, work)
    device = trainer.ctx.device
    out: dict[str, Any] = {"engine": measure(trainer.step, sync_for(trainer), steps, device),
                           "active": active_parameters(trainer.ctx.model, config.num_experts_per_tok, config.num_experts),
                           "tokens": step_tokens(trainer.pairs, range(WARMUP, WARMUP + steps)),
                           "geometry": rehearsal.geometry_of(config)}
    pairs, train_cfg, method_cfg = trainer.pairs, trainer.cfg, trainer.method.cfg
    del trainer
    rehearsal.released(device.type)
    try:
        plain = PlainLoop(remake(), method, pairs, train_cfg, method_cfg)
        out["plain"] = measure(plain.step, sync_on(device), steps, device)
        del plain
    except torch.OutOfMemoryError as e:  # NPO's plain loop keeps a second model
        out["plain"] = {"error": f"out of memory: {str(e).splitlines()[0][:120]}"}
    rehearsal.released(device.type)
    return out


def figures_of(method: str, target: float, r: dict[str, Any], label: str) -> list[Figure]:
    """Step, peak and tokens/s ratios (engine over plain loop) and the engine's model TFLOP/s."""
    engine, plain = r["engine"], r["plain"]
    tflops = 6 * r["active"] * r["tokens"] / engine["step_s"] / 1e12
    detail = {"engine_ms": round(engine["step_s"] * 1e3, 2), "engine_peak_GiB": round(engine["peak"] / 2**30, 3),
              "engine_start_GiB": round(engine["start"] / 2**30, 3),
              "tokens_per_step": r["tokens"], "active_params": r["active"], "geometry": r["geometry"]}
    figs = [Figure(f"{method} engine model TFLOP/s (6 x active params x tokens / step){label}", sig(tflops), None,
                   op="report", unit="TFLOP/s", detail=detail)]
    if "error" in plain:
        detail["plain"] = plain["error"]
        return figs
    detail.update(plain_ms=round(plain["step_s"] * 1e3, 2), plain_peak_GiB=round(plain["peak"] / 2**30, 3),
                  plain_start_GiB=round(plain["start"] / 2**30, 3))
    figs += [Figure(f"{method} engine step / plain loop step{label}", sig(engine["step_s"] / plain["step_s"]), target,
                    detail=detail),
             Figure(f"{method} engine peak memory / plain loop peak{label}", sig(engine["peak"] / plain["peak"]),
                    PEAK_TARGET, detail=detail)]
    if method in ("graddiff", "npo"):
        figs.append(Figure(f"{method} engine tokens/s / plain loop tokens/s{label}",
                           sig(plain["step_s"] / engine["step_s"]), TOKENS_TARGET, op=">=", detail=detail))
    return figs


def run(env: Env) -> list[Figure]:
    scale = "full" if torch.cuda.is_available() else "cpu"
    steps = 6 if scale == "full" else env.settings.real["repeats"]
    out = []
    for method, target in METHODS if env.settings.preset != "tiny" else METHODS[1:2]:  # smoke: the plumbing once
        work = env.work / f"full-depth-gpu-{method}"
        work.mkdir(parents=True, exist_ok=True)
        r = compare(method, scale, steps, work)
        g = r["geometry"]
        label = (f", {MODEL.split('/')[-1]} geometry ({g['layers']} layers, d {g['d']}, {g['experts']} experts, "
                 f"top-{g['top_k']}){'' if scale == 'full' else ' at CPU width'}")
        out += figures_of(method, target, r, label)
    return out
