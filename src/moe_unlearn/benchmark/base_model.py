"""Train the demo base model: a BPE tokenizer and a tiny MoE, from scratch, on the benchmark.

The model memorises forget + retain facts (holdout excluded); `knowledge_report` then measures,
with the eval suite's metrics and the models layer's routing capture, what it knows
(teacher-forced answer accuracy, exact answers, MC accuracy) and how much the forget domain
leans on particular experts (per-layer max of f_e(forget) / f_e(retain)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from moe_unlearn.benchmark.generator import Benchmark
from moe_unlearn.data import Split, UnlearnData
from moe_unlearn.data.tokenize import collate, encode_qa, encode_text
from moe_unlearn.eval.config import EvalConfig
from moe_unlearn.eval.context import EvalContext, eval_mode
from moe_unlearn.models import capture_routing
from moe_unlearn.models.loading import resolve_device
from moe_unlearn.models.tiny import tiny_config

PAD, EOS = "<pad>", "<eos>"


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "olmoe"  # a models.tiny architecture
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256  # per expert
    layers: int = 4
    heads: int = 4
    experts: int = 16
    top_k: int = 2
    aux_loss_coef: float = 0.001


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    max_length: int = 48
    eval_size: int = 256  # examples per split in the report


def new_model(m: ModelConfig, tok: PreTrainedTokenizerFast, max_len: int) -> torch.nn.Module:
    """A freshly initialised `m.arch` model (the models layer's tiny-config builder) for this tokenizer."""
    config = tiny_config(m.arch, num_experts=m.experts, top_k=m.top_k, layers=m.layers, hidden=m.hidden_size,
                         vocab=len(tok), heads=m.heads, intermediate=m.intermediate_size, max_positions=max_len,
                         router_aux_loss_coef=m.aux_loss_coef, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(config)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained offline on texts, with <pad> and <eos> (no BOS)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS)


def corpus_texts(bench: Benchmark) -> list[str]:
    """Every string the tokenizer should know (all splits, holdout included: no answers leak)."""
    out = [r["text"] for s in bench.splits.values() for r in s.text]
    for s in bench.splits.values():
        out += [r["question"] + " " + r["answer"] for r in s.qa]
    return out + [r["question"] for r in bench.utility_mc]


def training_examples(bench: Benchmark, tok: PreTrainedTokenizerFast, max_length: int) -> list[dict]:
    """QA (loss on answers) and statements (loss on all tokens) from forget + retain."""
    qa = [encode_qa(tok, r["question"], r["answer"], max_length=max_length) for r in bench.train_qa]
    text = [encode_text(tok, r["text"], max_length=max_length) for r in bench.train_text]
    return qa + text


def _lr_factor(step: int, t: TrainConfig) -> float:
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def train_model(model: torch.nn.Module, examples: list[dict], pad_id: int, t: TrainConfig, *, seed: int,
                progress: bool = True) -> list[float]:
    """AdamW with warmup + cosine; batches from seeded epoch permutations. Returns step losses."""
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, t))
    per_epoch = max(1, len(examples) // t.batch_size)
    losses: list[float] = []
    order = torch.empty(0, dtype=torch.long)
    model.train()
    bar = tqdm(range(t.steps), desc="training base model", disable=not progress, leave=False)
    for step in bar:
        epoch, pos = divmod(step, per_epoch)
        if pos == 0:
            order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed + epoch))
        idx = order[pos * t.batch_size:(pos + 1) * t.batch_size].tolist()
        batch = collate([examples[i] for i in idx], pad_id)
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                    labels=batch["labels"].to(device), output_router_logits=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


REPORT_METRICS = ["token_acc", "exact_match", "mc_acc", "utility_mc"]


def eval_data(bench: Benchmark) -> UnlearnData:
    """The benchmark's splits in the shape the eval suite reads."""
    split = {name: Split(s.qa, s.text, s.mc) for name, s in bench.splits.items()}
    return UnlearnData(split["forget"], split["retain"], split["holdout"], bench.utility_mc)


def _expert_shares(ctx: EvalContext, split: str) -> torch.Tensor:
    """[L, E] share of the split's text + QA tokens whose top-k contains each expert.

    Must run before anything else reads these passes of `ctx`: they are memoised, so their
    forwards run (and are captured) only on first use.
    """
    with capture_routing(ctx.model) as cap:
        ctx.text_stats(split)
        ctx.qa_pass(split)
    return torch.stack(cap.frequencies())


def knowledge_report(model: torch.nn.Module, tok: PreTrainedTokenizerFast, bench: Benchmark, m: ModelConfig,
                     t: TrainConfig) -> dict[str, Any]:
    """Accuracies per split and the forget domain's expert load ratios per layer (eval suite metrics)."""
    cfg = EvalConfig(metrics=REPORT_METRICS, batch_size=64, max_examples=t.eval_size, max_length=t.max_length)
    ctx = EvalContext(model, tok, eval_data(bench), cfg)
    report: dict[str, Any] = {}
    with eval_mode(model):
        f_forget, f_retain = _expert_shares(ctx, "forget"), _expert_shares(ctx, "retain")
        for name in bench.splits:
            report[f"{name}_answer_token_acc"] = round(ctx.result("token_acc", name).value, 4)
            report[f"{name}_answer_exact"] = round(ctx.result("exact_match", name).value, 4)
            report[f"{name}_mc_acc"] = round(ctx.result("mc_acc", name).value, 4)
        report["utility_mc_acc"] = round(ctx.result("utility_mc").value, 4)
    ratio = f_forget / (f_retain + 1e-6)
    best = ratio.argmax(1)
    report["expert_load_ratio_by_layer"] = [round(float(r), 3) for r in ratio.max(1).values]
    report["top_forget_expert_by_layer"] = best.tolist()
    report["max_expert_load_ratio"] = round(float(ratio.max()), 3)
    report["uniform_expert_share"] = round(m.top_k / m.experts, 4)
    return report


def kernels() -> str:
    """What decides a CPU build's last bits besides its config and thread count: torch's version
    and the ATen CPU kernel set it dispatches to (the CPU's, or ATEN_CPU_CAPABILITY's)."""
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


def build_base_model(bench: Benchmark, m: ModelConfig, t: TrainConfig, *, seed: int, progress: bool = True,
                     device: torch.device | None = None) -> tuple[torch.nn.Module, PreTrainedTokenizerFast, dict]:
    """Tokenizer + model trained on forget + retain; returns (model, tokenizer, report)."""
    start = time.perf_counter()
    if device is None:  # also names the CPU for DeepSpeed, which saving imports (else it prints a warning)
        device = resolve_device("auto")
    tok = train_tokenizer(corpus_texts(bench), m.vocab_size)
    torch.manual_seed(seed)
    model = new_model(m, tok, t.max_length).to(device)
    model.set_experts_implementation("grouped_mm")
    examples = training_examples(bench, tok, t.max_length)
    losses = train_model(model, examples, tok.pad_token_id, t, seed=seed, progress=progress)
    train_seconds = time.perf_counter() - start
    report = knowledge_report(model, tok, bench, m, t)
    report.update(
        arch=m.arch, params=sum(p.numel() for p in model.parameters()), steps=t.steps, batch_size=t.batch_size,
        train_examples=len(examples), final_loss=round(sum(losses[-10:]) / min(10, len(losses)), 4),
        train_seconds=round(train_seconds, 1), device=device.type, torch_threads=torch.get_num_threads(),
        kernels=kernels(),
    )
    return model, tok, report
