"""Step, memory, preparation and evaluation figures at real MoE geometry (random weights).

Two geometries, ONE MoE layer each (what a 2-core 24 GiB machine holds next to a second
trainer): OLMoE-1B-7B (d 2048, 16 heads, 64 experts, top-8, vocab 50,304) and Qwen3-30B-A3B
(d 2048, 32 query / 4 KV heads of 128, 128 experts, top-8, vocab 151,936). The experts'
intermediate size is trimmed (`Settings.real["intermediate"]`, stated in every figure; the real
ones are 1,024 and 768), random weights, the embedded benchmark's data and tokenizer (ids < 1,024).
Training trains the MoE layer (attention, router, experts); embeddings and LM head stay frozen
(training them too would add 4x their 0.8 / 2.3 GiB for gradients and AdamW state).

Figures per geometry: GRIP / TRACE / SEUF step over the base method's; routing capture over a
plain forward; GRIP preparation seconds per 1k retained tokens; NPO and GradDiff-KL peak step
memory over GA's; MC and membership scoring throughput over a plain forward. At the Qwen3
vocabulary also the chunked loss's memory against the unchunked one (train.loss_chunk=0) on
the same text batch (routers trained, so that the optimizer's own peak does not hide the loss).
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench import eval_throughput
from bench.capture import capture_overhead
from bench.common import Env, Figure, sig
from bench.memory import trainer_peak
from bench.session import trainer_for
from bench.step_time import step_overhead
from moe_unlearn.models.tiny import tiny_config

MIB = 2**20


@dataclass(frozen=True)
class Geometry:
    name: str
    arch: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    experts: int
    top_k: int
    vocab: int
    real_intermediate: int


GEOMETRIES = (
    Geometry("OLMoE-1B-7B", "olmoe", 2048, 16, 16, 128, 64, 8, 50304, 1024),
    Geometry("Qwen3-30B-A3B", "qwen3_moe", 2048, 32, 4, 128, 128, 8, 151936, 768),
)
SMOKE = (Geometry("smoke", "qwen3_moe", 64, 4, 2, 16, 8, 2, 4096, 64),)

# (figure, base method, adapter, target)
PAIRS = (("GA+GRIP step / GA step", "ga", "grip", 1.10),
         ("GradDiff+TRACE step / GradDiff step", "graddiff", "trace", 1.05),
         ("GA+SEUF step / GA step", "ga", "seuf", 1.0))


def build_model(g: Geometry, intermediate: int, tokenizer_dir: Path, out: Path) -> Path:
    """A random one-MoE-layer model of geometry g, saved with the benchmark's tokenizer."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = tiny_config(g.arch, num_experts=g.experts, top_k=g.top_k, layers=1, hidden=g.hidden, vocab=g.vocab,
                         heads=g.heads, intermediate=intermediate, num_key_value_heads=g.kv_heads,
                         head_dim=g.head_dim, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    return save_random_model(config, tok, out)


def save_random_model(config: Any, tok: Any, out: Path) -> Path:
    """A float32 model of `config` initialised from seed 0 (the caller's RNG untouched), saved with tok."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    gc.collect()
    return out


def run(env: Env) -> list[Figure]:
    r = env.settings.real
    model_dir = env.manifest.parent / json.loads(env.manifest.read_text())["model"]
    figures: list[Figure] = []
    for g in (SMOKE if env.settings.preset == "tiny" else GEOMETRIES):
        path = build_model(g, r["intermediate"], model_dir, env.work / f"real-{g.name}")
        label = f", {g.name} geometry (1 MoE layer, expert intermediate {r['intermediate']})"
        geometry = {"d": g.hidden, "experts": g.experts, "top_k": g.top_k, "vocab": g.vocab, "moe_layers": 1,
                    "expert_intermediate": r["intermediate"], "real_expert_intermediate": g.real_intermediate,
                    "batch": r["batch"], "trains": "the MoE layer (embeddings and LM head frozen)"}
        common = [f"model.path={path}", "train.params=[layers:0-0]", f"data.batch_size={r['batch']}",
                  f"data.retain_batch_size={r['batch']}", f"grip.cache_tokens={r['grip_cache_tokens']}"]
        new = []
        for name, method, adapter, target in PAIRS:
            fig = step_overhead(env, name + label, method, adapter, target, common, tag=f"-{g.name}",
                                repeats=r["repeats"], warmup=r["warmup"])
            new.append(fig)
            if adapter == "grip":
                per_1k = 1000 * fig.detail["prep_seconds"] / fig.detail["cache_tokens"]
                new.append(Figure(f"GRIP preparation seconds per 1k retained tokens{label}", sig(per_1k), None,
                                  op="report", unit="s", detail={k: fig.detail.get(k) for k in
                                                                 ("prep_seconds", "cache_tokens", "prep_gram")}))
        new.append(capture_overhead(env, path, label, examples=r["eval_examples"], repeats=r["repeats"],
                                    warmup=r["warmup"]))
        new += memory_figures(env, g, label, common)
        new += eval_throughput.figures(env, label, model_dir=path, examples=r["eval_examples"],
                                       repeats=r["repeats"], warmup=r["warmup"], target=0.9)
        for fig in new:
            fig.detail["geometry"] = geometry
        figures += new
        gc.collect()
    return figures


def _peak(env: Env, tag: str, method: str, overrides: list[str]) -> dict[str, int]:
    trainer = trainer_for(env.manifest, env.work / f"real-memory-{tag}", method, [], overrides)
    out = trainer_peak(trainer, warmup=1)  # AdamW's state exists after one step
    out["reference_bytes"] = trainer.reference_bytes
    del trainer
    gc.collect()
    return out


def memory_figures(env: Env, g: Geometry, label: str, common: list[str]) -> list[Figure]:
    """NPO and GradDiff-KL over GA; at the largest vocabulary, chunked over unchunked loss memory."""
    ga = _peak(env, f"{g.name}-ga", "ga", common)
    npo = _peak(env, f"{g.name}-npo", "npo", common)
    kl = _peak(env, f"{g.name}-kl", "graddiff", [*common, "graddiff.retain_loss=kl"])
    mib = {k: {"peak_MiB": round(v["peak"] / MIB, 1), "start_MiB": round(v["start"] / MIB, 1)}
           for k, v in (("ga", ga), ("npo", npo), ("graddiff_kl", kl))}
    mib["graddiff_kl"]["kept_original_values_MiB"] = round(kl["reference_bytes"] / MIB, 1)
    figures = [Figure(f"NPO peak memory / GA peak memory{label}", sig(npo["peak"] / ga["peak"]), 1.05, detail=mib),
               Figure(f"GradDiff-KL peak memory / GA peak memory{label}", sig(kl["peak"] / ga["peak"]), 1.05,
                      detail=mib),
               # what the KL costs besides the one copy of the trained values its reference needs
               Figure(f"(GradDiff-KL peak - kept original values) / GA peak memory{label}",
                      sig((kl["peak"] - kl["reference_bytes"]) / ga["peak"]), None, op="report", detail=mib)]
    if g.vocab != max(x.vocab for x in (SMOKE if g.name == "smoke" else GEOMETRIES)):
        return figures
    # routers train here: with the whole layer trained, AdamW's update of its parameters sets the
    # step's peak in both variants and hides the loss (measured: equal peaks)
    r = env.settings.real
    text = [*common, "train.params=[routers]", "data.train_format=text", f"data.batch_size={r['text_batch']}"]
    chunked = _peak(env, f"{g.name}-chunked", "ga", [*text, f"train.loss_chunk={r['loss_chunk']}"])
    default = _peak(env, f"{g.name}-default-chunk", "ga", text)  # train.loss_chunk's default: how it grows
    full = _peak(env, f"{g.name}-full", "ga", [*text, "train.loss_chunk=0"])
    detail = {"batch": f"GA, {r['text_batch']} texts (every token scored), routers trained", "loss_chunk": r["loss_chunk"],
              "chunked": {"peak_MiB": round(chunked["peak"] / MIB, 1), "start_MiB": round(chunked["start"] / MIB, 1)},
              "unchunked": {"peak_MiB": round(full["peak"] / MIB, 1), "start_MiB": round(full["start"] / MIB, 1)},
              "default_loss_chunk": {"peak_MiB": round(default["peak"] / MIB, 1),
                                     "start_MiB": round(default["start"] / MIB, 1)}}
    working = (chunked["peak"] - chunked["start"]) / (full["peak"] - full["start"])
    figures += [Figure(f"step working memory (peak above resting bytes), chunked / unchunked loss{label}",
                       sig(working), 0.5, detail=detail),
                Figure(f"step peak memory, chunked / unchunked loss{label}", sig(chunked["peak"] / full["peak"]), None,
                       op="report", detail=detail)]
    return figures
