"""Whole models at full depth against the training loop a user would write, and every adapter over its base.

The baseline is `bench.plain_loop.PlainLoop`, each base method's loop written with transformers
and torch only (the model's own forward over whole logits, torch's cross-entropy, a frozen copy
as the reference where the method has one, torch's AdamW with the engine's lr, betas and
clipping, fp32), fed the SAME batches as the engine's Trainer (`trainer.pairs.batch(step)`).
Every ratio is measured in one run with the two variants interleaved (bench.common.interleaved).

On CPU the geometry is OLMoE-1B-7B's depth and routing (16 layers, 64 experts, top-8) at a
scaled width (d 128, expert intermediate 32, the benchmark's 1,024-token vocabulary), random
weights; `scripts/gpu_check.sh` runs the real widths on a lent GPU. MC and membership scoring
are timed on the same model against a plain no-grad forward of the same batches (bench.eval_throughput).
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

from transformers import AutoTokenizer

from bench import eval_throughput
from bench.common import Env, Figure, active_parameters, interleaved, median_ms, paired_ratio, sig, step_tokens
from bench.memory import WARMUP_STEPS, live_storage_bytes, live_storages, peak_bytes, trainer_peak
from bench.plain_loop import OBJECTIVES, PlainLoop
from bench.real_geometry import save_random_model
from bench.session import trainer_for
from bench.step_time import step_overhead
from moe_unlearn.models.tiny import tiny_config

DEPTH = {"full": dict(layers=16, hidden=128, heads=4, experts=64, top_k=8, intermediate=32),
         "smoke": dict(layers=4, hidden=32, heads=2, experts=8, top_k=2, intermediate=16)}
STEP_TARGET = 0.90  # every base method's step over the plain loop's (issue 26)
METHODS = tuple((m, STEP_TARGET) for m in OBJECTIVES)
PEAK_TARGET = 1.0  # every base method's step peak over the plain loop's (issue 26)
KEEP_ROUTING_TARGET = 1.25  # keep_routing's step over its base method's (issue 26)
ADAPTERS = (("ga", "grip", 1.05), ("graddiff", "trace", 1.05), ("ga", "seuf", 0.6), ("ga", "keep_routing", KEEP_ROUTING_TARGET))
# keep_routing sharing the method's retain batch instead of its own 32-row sample (docs/benchmarks.md:
# what each size costs in retained-routing stability)
SHARED_RETAIN = ("ga", "graddiff", "npo")
SCORING_TARGET = 0.9  # MC and membership scoring tokens/s over a plain no-grad forward's (issue 26)


def build_model(geometry: dict[str, int], tokenizer_dir: Path, out: Path) -> Path:
    """A random OLMoE-family model of the given depth and width, saved with the benchmark's tokenizer."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = tiny_config("olmoe", num_experts=geometry["experts"], top_k=geometry["top_k"], layers=geometry["layers"],
                         hidden=geometry["hidden"], vocab=len(tok), heads=geometry["heads"],
                         intermediate=geometry["intermediate"], pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None)
    return save_random_model(config, tok, out)


def model_from(manifest: Path, geometry: dict[str, int], out: Path) -> Path:
    """build_model with the tokenizer of `manifest`'s benchmark model."""
    return build_model(geometry, manifest.parent / json.loads(manifest.read_text())["model"], out)


def peak_ratio(env: Env, path: Path, method: str, common: list[str], name: str, geometry: dict[str, int]) -> Figure:
    """Peak memory of one step (bench.memory.peak_bytes: after the warm-up, gradients cleared) of
    the engine, then of the plain loop on its batches with the engine gone: each alone in the
    process, so neither's resting bytes count in the other's; tensors alive before either was built
    (other groups', other tests') count in neither."""
    others = live_storages()
    trainer = trainer_for(env.manifest, env.work / f"full-depth-peak-{method}", method, [], common)
    engine = trainer_peak(trainer, besides=others)
    plain = PlainLoop.load(path, method, trainer)  # keeps the trainer's batches, not its model
    del trainer
    gc.collect()
    for _ in range(WARMUP_STEPS):
        plain.step()
    theirs = peak_bytes(plain.step, plain.model.device, others)
    del plain
    gc.collect()
    mib = 1 / 2**20
    return Figure(name, sig(engine["peak"] / theirs["peak"]), PEAK_TARGET,
                  detail={"engine_MiB": round(engine["peak"] * mib, 2), "plain_MiB": round(theirs["peak"] * mib, 2),
                          "engine_start_MiB": round(engine["start"] * mib, 2),
                          "plain_start_MiB": round(theirs["start"] * mib, 2),
                          "left_alive_after_MiB": round(live_storage_bytes() * mib, 2), "geometry": geometry})


def throughput(method: str, trainer, step_s: float, batches: range, geometry: dict[str, int],
               label: str) -> list[Figure]:
    """The engine's tokens/s (forget + retain tokens of the timed steps' batches) and model GFLOP/s
    (6 x active parameters x tokens per step, the issue's measure: it counts a whole forward and
    backward, so it overstates RMU's steps, which train three layers and end at the third)."""
    tokens = step_tokens(trainer.pairs, batches)
    active = active_parameters(trainer.ctx.model, geometry["top_k"], geometry["experts"])
    detail = {"tokens_per_step": tokens, "active_params": active, "engine_ms": round(step_s * 1e3, 2)}
    return [Figure(f"{method} engine tokens/s{label}", sig(tokens / step_s), op="report", unit="tokens/s",
                   detail=detail),
            Figure(f"{method} engine model GFLOP/s (6 x active params x tokens / step){label}",
                   sig(6 * active * tokens / step_s / 1e9), op="report", unit="GFLOP/s", detail=detail)]


def run(env: Env) -> list[Figure]:
    s = env.settings
    geometry = DEPTH["smoke" if s.preset == "tiny" else "full"]
    path = model_from(env.manifest, geometry, env.work / "full-depth-model")
    common = [f"model.path={path}", "train.lr=1e-5"]
    label = f", full depth ({geometry['layers']} layers, {geometry['experts']} experts, top-{geometry['top_k']}, d {geometry['hidden']})"
    figures = []
    for method, target in METHODS:
        trainer = trainer_for(env.manifest, env.work / f"full-depth-{method}", method, [], common)
        plain = PlainLoop.load(path, method, trainer)
        times = interleaved({"engine": trainer.step, "plain": plain.step}, repeats=s.repeats, warmup=s.warmup)
        figures.append(Figure(f"{method} engine step / plain loop step{label}", sig(paired_ratio(times, "engine", "plain")),
                              target, detail={"engine_ms": median_ms(times["engine"]), "plain_ms": median_ms(times["plain"]),
                                              "geometry": geometry}))
        figures += throughput(method, trainer, median_ms(times["engine"]) / 1e3, range(s.warmup, s.warmup + s.repeats),
                              geometry, label)
        del trainer, plain
        figures.append(peak_ratio(env, path, method, common, f"{method} engine peak memory / plain loop peak{label}",
                                  geometry))
    for method, adapter, target in ADAPTERS:
        fig = step_overhead(env, f"{method}+{adapter} step / {method} step{label}", method, adapter, target, common,
                            tag="-full-depth")
        fig.detail["geometry"] = geometry
        figures.append(fig)
    for method in SHARED_RETAIN:
        fig = step_overhead(env, f"{method}+keep_routing (batch_size null) step / {method} step{label}", method,
                            "keep_routing", KEEP_ROUTING_TARGET, [*common, "keep_routing.batch_size=null"],
                            tag="-full-depth-shared")
        fig.detail["geometry"] = geometry
        figures.append(fig)
    return figures + eval_throughput.figures(env, label, model_dir=path, target=SCORING_TARGET)
