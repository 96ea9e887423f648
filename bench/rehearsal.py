"""Recipe rehearsal: every shipped unlearning recipe at its model's depth, random weights, fixture data.

    python -m bench.rehearsal [--scale cpu|full] [--only RECIPE ...] [--steps N] [--budget S] [--out PATH]

`moe-unlearn memory` estimates a recipe's peak from its config alone; this runs the recipe's own
training through the engine's Trainer (evaluation off) and sets the measured step time and peak
beside that estimate, one row per recipe.

--scale full (a lent GPU; scripts/gpu_check.sh): the recipe's default model at its real geometry
(models/memory.py GEOMETRY) in the recipe's dtype, with all of the recipe's training settings
(method and its section, adapters, train.params, batch sizes, max_length, grad_accum, optimizer
state). A recipe whose estimate exceeds the GPU's memory is skipped, and no recipe starts after
--budget seconds, so a short check ends with the rows it finished (most important first).
--scale cpu: the same depth and layer structure at width 64, at most 8 experts (top-k at most 2)
and vocabulary 256, float32, max_length 64, batches of at most 2, grad_accum 1: seconds per recipe
on 2 CPU cores. The method, adapters and trained-parameter selection stay the recipe's.

The model is built directly on the device in the run's dtype (seed 0) and handed to the Trainer in
memory: its folder holds config.json and a character tokenizer (models.tiny.tiny_tokenizer, ids <
100, fits every vocabulary) but no weights, since a 30B model's 61 GB would neither fit a lent
machine's 64 GiB disk nor save and load within the check's minutes. The data are the fixtures of
tests/fixtures/hub (the real datasets' schemas, as the recipe tests use them), copied with every
`text` field repeated to at least max_length characters: text rows are then as long as real ones.

Step time: median of --steps timed optimizer steps after one warm-up step. Peak: one further step
(bench.memory.trainer_peak: torch.cuda.max_memory_allocated on CUDA, the bench's storage count on
CPU). Estimate: estimate_memory for the same config at the batches' padded length.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from bench.fixtures import FIXTURES, to_fixtures
from bench.memory import trainer_peak
from bench.session import sync_for
from moe_unlearn.config import resolve_yaml
from moe_unlearn.models.memory import GEOMETRY, parameter_count
from moe_unlearn.models.tiny import tiny_tokenizer
from moe_unlearn.train import engine
from moe_unlearn.train.config import build_config
from moe_unlearn.train.engine import Trainer
from moe_unlearn.train.memory import estimate_memory

REPO = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO / "configs" / "benchmarks"
GIB = 2**30
# most important first: one recipe per model and setting, then those differing from one above in data only
IMPORTANCE = ("wmdp_cyber", "muse_news", "tofu_forget10", "rwku", "wmdp_cyber_rmu",
              "wmdp_bio", "muse_books", "tofu_forget05", "tofu_forget01", "wmdp_bio_rmu")
CPU_WIDTH = {"hidden": 64, "heads": 4, "experts": 8, "top_k": 2, "vocab": 256}
CPU_RUN = {"max_length": 64, "batch": 2}
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
WIDTH_KEYS = ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size")


def recipes() -> list[str]:
    """The shipped unlearning recipes (no bases, no fine-tuning recipes), most important first."""
    shipped = {p.stem for p in RECIPES_DIR.glob("*.yaml")
               if not p.name.startswith("_") and not p.stem.endswith("_finetune")}
    return [r for r in IMPORTANCE if r in shipped] + sorted(shipped - set(IMPORTANCE))


def cpu_geometry(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A model's config values at CPU width: same depth and layer kinds, narrower everything else."""
    w = CPU_WIDTH
    scale = w["hidden"] / kwargs["hidden_size"]
    kv = max(1, w["heads"] * kwargs["num_key_value_heads"] // kwargs["num_attention_heads"])  # keeps grouped K/V
    out = {**kwargs, "hidden_size": w["hidden"], "num_attention_heads": w["heads"], "num_key_value_heads": kv,
           "vocab_size": w["vocab"], "num_experts_per_tok": min(kwargs["num_experts_per_tok"], w["top_k"])}
    # multiples of 16: grouped_mm wants 16-byte strides, also in the estimate's bf16 trace
    out.update({k: 16 * max(1, round(kwargs[k] * scale / 16)) for k in WIDTH_KEYS if k in kwargs})
    out.update({k: min(kwargs[k], w["experts"]) for k in EXPERT_KEYS if k in kwargs})
    if "head_dim" in kwargs:
        out["head_dim"] = w["hidden"] // w["heads"]
    return out


def model_geometry(name: str, scale: str, tok: Any) -> PretrainedConfig:
    """The transformers config of a recipe's default model at `scale`, with the tokenizer's special ids."""
    model_type, kwargs = GEOMETRY[name]
    kwargs = cpu_geometry(kwargs) if scale == "cpu" else kwargs
    return AutoConfig.for_model(model_type, **kwargs, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id)


def lengthened_fixtures(out: Path, min_chars: int) -> Path:
    """A copy of the fixture hub whose `text` fields are repeated to at least min_chars characters."""
    shutil.copytree(FIXTURES, out)
    for path in out.rglob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            if isinstance(row.get("text"), str) and row["text"]:
                row["text"] = " ".join([row["text"]] * math.ceil(min_chars / (len(row["text"]) + 1)))
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def run_config(recipe: dict[str, Any], scale: str, model_dir: Path, work: Path, device: str) -> dict[str, Any]:
    """A recipe's raw config for the rehearsal: its training settings (shrunk at cpu scale), the
    rehearsal's model and fixture data, no evaluation, checkpoint or step budget of its own."""
    raw = copy.deepcopy(recipe)
    data = raw["data"]
    if scale == "cpu":
        raw["model"] = {**raw["model"], "dtype": "float32"}
        raw["train"] = {**raw["train"], "precision": "fp32", "grad_accum": 1}
        data.update(max_length=CPU_RUN["max_length"], batch_size=min(data.get("batch_size", 8), CPU_RUN["batch"]),
                    retain_batch_size=min(data.get("retain_batch_size", 8), CPU_RUN["batch"]))
    raw["data"] = to_fixtures({"data": data}, lengthened_fixtures(work / "hub", data.get("max_length", 64)))["data"]
    raw["model"] = {**raw["model"], "path": str(model_dir), "device": device}
    raw["train"] = {**raw["train"], "max_steps": 1000, "epochs": None, "eval_every": 0, "checkpoint_every": 0}
    raw["eval"] = {"metrics": ["nll"], "max_examples": 8}  # never run: the Trainer only steps
    return raw


def build_model(config: PretrainedConfig, dtype: str, device: torch.device) -> torch.nn.Module:
    """A random model of `config` made on `device` in `dtype` (seed 0), as load_model leaves one."""
    torch.manual_seed(0)  # Trainer.create seeds the run's own draws afterwards
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    if device.type == "cpu" and getattr(model.config, "_experts_implementation", None) == "batched_mm":
        model.set_experts_implementation("grouped_mm")  # models.loading.load_model: batched_mm is ~40x slower on CPU
    return model.eval()


@contextlib.contextmanager
def handed_over(model: torch.nn.Module, tok: Any) -> Iterator[None]:
    """Trainer.create gets `model` where it would load model.path (whose folder has no weights)."""
    load = engine.load_model
    engine.load_model = lambda *args, **kwargs: (model, tok)
    try:
        yield
    finally:
        engine.load_model = load


def timed_steps(trainer: Trainer, steps: int) -> list[float]:
    """Seconds of `steps` optimizer steps after one untimed warm-up step (AdamW's state, kernels)."""
    sync = sync_for(trainer)
    trainer.step()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        trainer.step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def padded_length(trainer: Trainer, steps: int) -> int:
    """The longest padded row of the batches the rehearsal's steps forwarded."""
    accum = trainer.cfg.grad_accum
    batches = [trainer.pairs.batch(i) for i in range(steps * accum)]
    return max(b["input_ids"].shape[1] for pair in batches for b in pair if b is not None)


def geometry_of(config: PretrainedConfig) -> dict[str, Any]:
    """The shapes a row reports (also for a recipe skipped before its model is built)."""
    experts = next(getattr(config, k) for k in EXPERT_KEYS if hasattr(config, k))
    return {"layers": config.num_hidden_layers, "d": config.hidden_size, "experts": experts,
            "top_k": config.num_experts_per_tok, "vocab": config.vocab_size, "params": parameter_count(config)}


def settings_of(cfg: Any) -> dict[str, Any]:
    """What the run trained with (the test checks these are the recipe's own)."""
    full = cfg.to_dict()
    return {"method": cfg.method, "adapters": list(cfg.adapters), "params": list(cfg.train.params),
            "sections": {name: full[name] for name in (cfg.method, *cfg.adapters)},
            "batch": cfg.data.batch_size, "retain_batch": cfg.data.retain_batch_size,
            "max_length": cfg.data.max_length, "grad_accum": cfg.train.grad_accum, "dtype": cfg.model.dtype,
            "optim_state_dtype": cfg.train.optim_state_dtype}


def rehearse(recipe: str, scale: str, steps: int, work: Path) -> dict[str, Any]:
    """One recipe's row: geometry, settings, step time, measured peak and the estimate."""
    device = torch.device("cuda" if scale == "full" else "cpu")
    recipe_raw = resolve_yaml(RECIPES_DIR / f"{recipe}.yaml")
    hub = recipe_raw["model"]["path"]
    raw = run_config(recipe_raw, scale, work / "model", work, device.type)
    tok = tiny_tokenizer()
    config = model_geometry(hub, scale, tok)
    config.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    cfg = build_config(raw)
    row = {"recipe": recipe, "scale": scale, "model": hub, "geometry": geometry_of(config),
           "settings": settings_of(cfg)}
    if device.type == "cuda":
        bound = estimate_memory(cfg).total  # at max_length: the most the batches can reach
        total = torch.cuda.get_device_properties(device).total_memory
        if bound > total:
            return {**row, "status": f"skipped: estimate {bound / GIB:.1f} GiB > this GPU's {total / GIB:.1f} GiB"}
    model = build_model(config, cfg.model.dtype, device)
    with handed_over(model, tok):
        trainer = Trainer.create(cfg, work / "run", progress=False, overwrite=True, eval_routing=False)
    del model
    return {**row, **measured(trainer, cfg, steps)}


def measured(trainer: Trainer, cfg: Any, steps: int) -> dict[str, Any]:
    """Step times and peak of the Trainer's steps, and the estimate at the rows they forwarded."""
    trainer.ctx.model.train()
    times = timed_steps(trainer, steps)
    peak = trainer_peak(trainer, warmup=0)["peak"]
    length = padded_length(trainer, steps + 2)  # warm-up, timed and peak steps
    est = estimate_memory(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_length=length)),
                          device=trainer.ctx.device.type)
    return {"status": "ok", "tokens": length, "trained": sum(t.numel() for t in trainer.trainable.leaves()),
            "estimate_trained": est.trainable, "step_s": statistics.median(times), "step_times_s": times,
            "peak_GiB": peak / GIB, "estimate_GiB": est.total / GIB, "estimate_over_peak": est.total / peak}


def released(device_type: str) -> None:
    """Free what one recipe left, so the next one's peak is its own."""
    gc.collect()
    if device_type == "cuda":
        torch.cuda.empty_cache()


def count(n: int) -> str:
    """1234567 -> '1.23M'."""
    for exponent, unit in ((9, "B"), (6, "M"), (3, "k")):
        if n >= 10**exponent:
            return f"{n / 10**exponent:.3g}{unit}"
    return str(n)


def run_cell(row: dict[str, Any]) -> str:
    """method+adapters, what trains; forget+retain rows x tokens, accumulation, dtype."""
    s = row.get("settings")
    if s is None:
        return ""
    trains = f"trains {count(row['trained'])}" if "trained" in row else f"params {s['params']}"
    rows = f"{s['batch']}+{s['retain_batch']} x {row.get('tokens', s['max_length'])}, accum {s['grad_accum']}"
    return f"{'+'.join([s['method'], *s['adapters']])}, {trains}; {rows}, {s['dtype']}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per recipe."""
    lines = ["| recipe | model: layers, d, experts, top-k, params | run | step s (median) | peak GiB "
             "| estimate GiB | estimate / peak |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        g = r.get("geometry")
        geo = (f"{r['model']}: {g['layers']}, {g['d']}, {g['experts']}, top-{g['top_k']}, {count(g['params'])}"
               if g else "")
        measured = (f"{r['step_s']:.3g} | {r['peak_GiB']:.3g} | {r['estimate_GiB']:.3g} | {r['estimate_over_peak']:.3f}"
                    if r["status"] == "ok" else f"{r['status']} | | |")
        lines.append(f"| {r['recipe']} | {geo} | {run_cell(r)} | {measured} |")
    return "\n".join(lines)


def rehearsed(recipe: str, scale: str, steps: int) -> dict[str, Any]:
    """rehearse() in a scratch folder; a failure is the recipe's row, not the end of the run."""
    with tempfile.TemporaryDirectory(prefix=f"rehearsal-{recipe}-") as work:
        try:
            return rehearse(recipe, scale, steps, Path(work))
        except Exception as e:  # noqa: BLE001 - an OOM or a recipe's bug costs only its own row
            traceback.print_exc()
            first = (str(e).strip().splitlines() or [""])[0]
            return {"recipe": recipe, "status": f"FAIL: {type(e).__name__}: {first[:200]}"}
        finally:
            released("cuda" if scale == "full" else "cpu")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rehearsal", description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=("cpu", "full"), default="cpu")
    p.add_argument("--only", nargs="+", choices=recipes(), help="these recipes, in this order")
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps per recipe (after one warm-up)")
    p.add_argument("--budget", type=float, default=math.inf, help="seconds after which no further recipe starts")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) / "rehearsal.json" if os.environ.get("OUT")
                   else None, help="rows as JSON (default $OUT/rehearsal.json when OUT is set)")
    args = p.parse_args(argv)
    if args.scale == "full" and not torch.cuda.is_available():
        print("--scale full needs a CUDA GPU", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for recipe in args.only or recipes():
        if time.perf_counter() - t0 > args.budget:
            rows.append({"recipe": recipe, "status": f"not run: past the {args.budget:.0f} s budget"})
        else:
            rows.append(rehearsed(recipe, args.scale, args.steps))
        print(json.dumps(rows[-1]), flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    return 0 if all(not r["status"].startswith("FAIL") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
