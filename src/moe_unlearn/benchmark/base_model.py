"""Train the demo base model: a BPE tokenizer and a tiny MoE, from scratch, on the benchmark.

The model memorises forget + retain facts (holdout excluded); `knowledge_report` then measures
what it knows (teacher-forced answer accuracy, MC accuracy) and how much the forget domain
leans on particular experts (per-layer max of f_e(forget) / f_e(retain)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast, Qwen3MoeConfig, Qwen3MoeForCausalLM

from moe_unlearn.benchmark.generator import Benchmark
from moe_unlearn.data.tokenize import collate, encode_mc, encode_qa, encode_text
from moe_unlearn.registry import Registry

PAD, EOS = "<pad>", "<eos>"


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "olmoe"  # key of ARCHITECTURES
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


ARCHITECTURES: Registry[Callable[[ModelConfig, PreTrainedTokenizerFast, int], Any]] = Registry("architecture")


def _common(m: ModelConfig, tok: PreTrainedTokenizerFast, max_len: int) -> dict[str, Any]:
    return dict(
        vocab_size=len(tok), hidden_size=m.hidden_size, num_hidden_layers=m.layers,
        num_attention_heads=m.heads, num_key_value_heads=m.heads, max_position_embeddings=max_len,
        num_experts=m.experts, num_experts_per_tok=m.top_k, router_aux_loss_coef=m.aux_loss_coef,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True,
    )


@ARCHITECTURES.register("olmoe")
def _olmoe(m: ModelConfig, tok: PreTrainedTokenizerFast, max_len: int) -> OlmoeForCausalLM:
    return OlmoeForCausalLM(OlmoeConfig(intermediate_size=m.intermediate_size, **_common(m, tok, max_len)))


@ARCHITECTURES.register("qwen3_moe")
def _qwen3_moe(m: ModelConfig, tok: PreTrainedTokenizerFast, max_len: int) -> Qwen3MoeForCausalLM:
    cfg = Qwen3MoeConfig(moe_intermediate_size=m.intermediate_size, intermediate_size=m.intermediate_size,
                         decoder_sparse_step=1, norm_topk_prob=True, **_common(m, tok, max_len))
    return Qwen3MoeForCausalLM(cfg)


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


def _batches(examples: list[dict], size: int, pad_id: int, device: torch.device):
    for i in range(0, len(examples), size):
        b = collate(examples[i:i + size], pad_id)
        yield {k: v.to(device) for k, v in b.items()}


@torch.no_grad()
def answer_accuracy(model: torch.nn.Module, tok: PreTrainedTokenizerFast, qa: list[dict],
                    max_length: int) -> dict[str, float]:
    """Teacher-forced answer-token accuracy and share of answers with every token right."""
    device = next(model.parameters()).device
    ex = [encode_qa(tok, r["question"], r["answer"], max_length=max_length) for r in qa]
    right = total = exact = 0
    for b in _batches(ex, 64, tok.pad_token_id, device):
        pred = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].argmax(-1)
        labels = b["labels"][:, 1:]
        on = labels != -100
        ok = (pred == labels) & on
        right += int(ok.sum())
        total += int(on.sum())
        exact += int((ok.sum(1) == on.sum(1)).sum())
    return {"token_acc": right / max(1, total), "exact": exact / max(1, len(ex))}


@torch.no_grad()
def mc_accuracy(model: torch.nn.Module, tok: PreTrainedTokenizerFast, mc: list[dict], max_length: int) -> float:
    """Share of MC questions whose true choice has the highest summed log-likelihood."""
    device = next(model.parameters()).device
    ex = [e for r in mc for e in encode_mc(tok, r, max_length=max_length)]
    scores = []
    for b in _batches(ex, 64, tok.pad_token_id, device):
        logp = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].log_softmax(-1)
        labels = b["labels"][:, 1:]
        on = labels != -100
        tok_lp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        scores.append((tok_lp * on).sum(1))
    per_choice = torch.cat(scores).view(len(mc), -1)
    answers = torch.tensor([r["answer"] for r in mc], device=per_choice.device)
    return float((per_choice.argmax(1) == answers).float().mean())


@torch.no_grad()
def expert_load(model: torch.nn.Module, examples: list[dict], pad_id: int, top_k: int) -> torch.Tensor:
    """[L, E] share of non-padding tokens whose top-k contains each expert."""
    device = next(model.parameters()).device
    counts: torch.Tensor | None = None
    tokens = 0
    for b in _batches(examples, 64, pad_id, device):
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_router_logits=True)
        keep = b["attention_mask"].reshape(-1).bool()
        per_layer = []
        for logits in out.router_logits:
            chosen = logits[keep].topk(top_k, dim=-1).indices
            per_layer.append(torch.bincount(chosen.reshape(-1), minlength=logits.shape[-1]).float())
        c = torch.stack(per_layer).cpu()
        counts = c if counts is None else counts + c
        tokens += int(keep.sum())
    assert counts is not None
    return counts / tokens


def knowledge_report(model: torch.nn.Module, tok: PreTrainedTokenizerFast, bench: Benchmark, m: ModelConfig,
                     t: TrainConfig) -> dict[str, Any]:
    """Accuracies per split and the forget domain's expert load ratios per layer."""
    n = t.eval_size
    report: dict[str, Any] = {}
    for name, split in bench.splits.items():
        acc = answer_accuracy(model, tok, split.qa[:n], t.max_length)
        report[f"{name}_answer_token_acc"] = round(acc["token_acc"], 4)
        report[f"{name}_answer_exact"] = round(acc["exact"], 4)
        report[f"{name}_mc_acc"] = round(mc_accuracy(model, tok, split.mc[:n], t.max_length), 4)
    report["utility_mc_acc"] = round(mc_accuracy(model, tok, bench.utility_mc[:n], t.max_length), 4)

    def routed(split_name: str) -> list[dict]:
        s = bench.splits[split_name]
        return ([encode_text(tok, r["text"], max_length=t.max_length) for r in s.text[:n]]
                + [encode_qa(tok, r["question"], r["answer"], max_length=t.max_length) for r in s.qa[:n]])

    f_forget = expert_load(model, routed("forget"), tok.pad_token_id, m.top_k)
    f_retain = expert_load(model, routed("retain"), tok.pad_token_id, m.top_k)
    ratio = f_forget / (f_retain + 1e-6)
    best = ratio.argmax(1)
    report["expert_load_ratio_by_layer"] = [round(float(r), 3) for r in ratio.max(1).values]
    report["top_forget_expert_by_layer"] = best.tolist()
    report["max_expert_load_ratio"] = round(float(ratio.max()), 3)
    report["uniform_expert_share"] = round(m.top_k / m.experts, 4)
    return report


def build_base_model(bench: Benchmark, m: ModelConfig, t: TrainConfig, *, seed: int, progress: bool = True,
                     device: torch.device | None = None) -> tuple[torch.nn.Module, PreTrainedTokenizerFast, dict]:
    """Tokenizer + model trained on forget + retain; returns (model, tokenizer, report)."""
    start = time.perf_counter()
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = train_tokenizer(corpus_texts(bench), m.vocab_size)
    torch.manual_seed(seed)
    model = ARCHITECTURES.get(m.arch)(m, tok, t.max_length).to(device)
    model.set_experts_implementation("grouped_mm")
    examples = training_examples(bench, tok, t.max_length)
    losses = train_model(model, examples, tok.pad_token_id, t, seed=seed, progress=progress)
    train_seconds = time.perf_counter() - start
    report = knowledge_report(model, tok, bench, m, t)
    report.update(
        arch=m.arch, params=sum(p.numel() for p in model.parameters()), steps=t.steps, batch_size=t.batch_size,
        train_examples=len(examples), final_loss=round(sum(losses[-10:]) / min(10, len(losses)), 4),
        train_seconds=round(train_seconds, 1), device=device.type, torch_threads=torch.get_num_threads(),
    )
    return model, tok, report
