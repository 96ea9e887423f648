"""Greedy-generation ROUGE-L, each benchmark's own way, from the `rouge-score` library (its
default tokenizer: lower-cased alphanumeric words), reported in [0, 1] (the papers print x100).

- MUSE (`rouge_qa` = KnowMem on QA answers, `rouge_text` = VerbMem on text continuations):
  ROUGE-L F1, no stemming. As in MUSE, KnowMem runs on the forget and retain sets and VerbMem
  on the forget set only. KnowMem prompts are MUSE's few-shot prompts where `eval.knowmem_icl`
  names the split's in-context examples (MUSE's `forget_qa_icl` / `retain_qa_icl`), else the
  plain question; its answers are cut at MUSE's stop strings before scoring.
- TOFU (`tofu_rouge`): ROUGE-L RECALL with the Porter stemmer, of the greedy answer against
  the true answer, on the forget and retain sets (and real authors / world facts inside
  `tofu_model_utility`). Its own generation, of `eval.max_new_tokens_tofu` new tokens (200, as
  TOFU), so that long answers are not cut to KnowMem's 32 tokens.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from rouge_score import rouge_scorer
from tqdm.auto import tqdm

from moe_unlearn.core.dist import gather_objects, row_block, world_size
from moe_unlearn.data.tokenize import clip, pad_id
from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import nanmean

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
_TOFU_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
# MUSE's KnowMem answer ends at the first of these (muse_bench metrics/knowmem.py line 50; the same
# list in open-unlearning configs/eval/muse_metrics/forget_knowmem_ROUGE.yaml line 23): a few-shot
# prompt leads the model on to the next "Question:", which is not part of its answer.
MUSE_STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two strings, no stemming (MUSE)."""
    return float(_SCORER.score(reference, prediction)["rougeL"].fmeasure)


def tofu_rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L recall between two strings, Porter-stemmed (TOFU)."""
    return float(_TOFU_SCORER.score(reference, prediction)["rougeL"].recall)


def cut_at_stop_strings(text: str, stops: tuple[str, ...]) -> str:
    """The text before the first occurrence of any stop string (MUSE's get_prefix_before_words_occur)."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


def muse_knowmem_prompt(question: str, icl: list[dict]) -> str:
    """MUSE's KnowMem prompt (muse_bench metrics/knowmem.py lines 25-29): every in-context pair as
    "Question: q\nAnswer: a" followed by a blank line, then "Question: q\nAnswer: " for the asked one."""
    shots = "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in icl)
    return f"{shots}Question: {question}\nAnswer: "


def greedy_generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: bool = False,
    stops: tuple[str, ...] = (),
) -> list[str]:
    """Greedy continuations of token-id prompts (left-padded per batch), decoded without specials,
    cut at the first of `stops` (before surrounding whitespace is stripped, as MUSE cuts the raw
    text); capped so prompt + continuation fit the model's max_position_embeddings.

    batch_size is per process: each process generates its row block of every global batch (a
    one-token placeholder when its block is empty, so sharded models step together, with
    transformers' synced_gpus) and every process returns every continuation, in order.
    """
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    limit = getattr(model.config, "max_position_embeddings", None)  # never generate past the context
    world = world_size()
    mine: list[tuple[int, str]] = []
    chunks = range(0, len(prompts), batch_size * world)
    with torch.no_grad():
        for start in tqdm(chunks, desc="generate", disable=not progress, leave=False):
            lo, hi = row_block(min(batch_size * world, len(prompts) - start))
            chunk = prompts[start + lo : start + hi] or [[pad]]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, p in enumerate(chunk):
                ids[i, width - len(p) :] = torch.tensor(p)
                mask[i, width - len(p) :] = 1
            room = max_new_tokens if limit is None else min(max_new_tokens, limit - width)
            if room < 1 and world == 1:  # the prompt already fills the model's context
                texts = [""] * len(chunk)
            else:
                gen = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max(room, 1),
                    do_sample=False,
                    pad_token_id=pad,
                    eos_token_id=tokenizer.eos_token_id,
                    synced_gpus=world > 1,
                )
                texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True) if room >= 1 else [""] * len(chunk)
            mine += [(start + lo + i, cut_at_stop_strings(t, stops).strip()) for i, t in enumerate(texts[: hi - lo])]
    return [t for _, t in sorted(gather_objects(mine))]


def _generate(ctx: EvalContext, prompts: list[list[int]], max_new: int, stops: tuple[str, ...] = ()) -> list[str]:
    """Greedy answers to the first eval.max_generated prompts (all without it); the callers' zip
    with the references keeps the scored pairs aligned."""
    limit = ctx.cfg.max_generated
    return greedy_generate(ctx.model, ctx.tokenizer, prompts[:limit] if limit else prompts, max_new_tokens=max_new,
                           batch_size=ctx.cfg.batch_size, progress=ctx.progress, stops=stops)


def _rouge_result(preds: list[str], refs: list[str], score: Callable[[str, str], float]) -> MetricResult:
    per = [score(p, r) for p, r in zip(preds, refs)]
    samples = [{"prediction": p, "reference": r} for p, r in zip(preds[:3], refs[:3])]
    return MetricResult(nanmean(per), per, {"samples": samples})


def qa_prompts(ctx: EvalContext, split: str) -> list[list[int]]:
    """The question tokens (everything before the answer) of each QA eval record, in order."""
    prompts = []
    for b in ctx.qa_batches(split):
        for ids, labels, m in zip(b["input_ids"], b["labels"], b["attention_mask"]):
            first = int((labels != -100).nonzero()[0]) if (labels != -100).any() else int(m.sum())
            prompts.append(ids[:first].tolist())
    return prompts


def knowmem_icl(ctx: EvalContext, split: str) -> list[dict] | None:
    """The in-context QA pairs eval.knowmem_icl names for split (read once per context), or None."""
    source = getattr(ctx.cfg.knowmem_icl, split, None)
    return None if source is None else ctx.memo(("knowmem_icl", split), source.load)


def knowmem_prompts(ctx: EvalContext, split: str) -> list[list[int]]:
    """MUSE's few-shot prompt of each QA record (tokenized with specials, as MUSE; the last
    max_length tokens) where the split has in-context pairs; else the plain question prompts."""
    icl = knowmem_icl(ctx, split)
    if icl is None:
        return qa_prompts(ctx, split)
    texts = [muse_knowmem_prompt(str(r["question"]), icl) for r in ctx.records(split, "qa") or []]
    limit = ctx.cfg.max_length
    return [ctx.tokenizer(clip(t, limit, keep="tail"), add_special_tokens=True)["input_ids"][-limit:] for t in texts]


def _answers(ctx: EvalContext, split: str) -> list[str]:
    return [str(r["answer"]) for r in ctx.records(split, "qa") or []]


@metric("rouge_qa", higher_is_better=True, splits=("forget", "retain"))
def rouge_qa(ctx: EvalContext, split: str) -> MetricResult | None:
    """KnowMem (MUSE): ROUGE-L F1, unstemmed, of the greedy answer (max_new_tokens_qa, cut at MUSE's stop strings)."""
    if not ctx.records(split, "qa"):
        return None
    preds = _generate(ctx, knowmem_prompts(ctx, split), ctx.cfg.max_new_tokens_qa, MUSE_STOP_STRINGS)
    return _rouge_result(preds, _answers(ctx, split), rouge_l)


@metric("tofu_rouge", higher_is_better=True, splits=("forget", "retain"))
def tofu_rouge(ctx: EvalContext, split: str) -> MetricResult | None:
    """TOFU: ROUGE-L recall, Porter-stemmed, of the greedy answer (max_new_tokens_tofu) vs the true answer."""
    if not ctx.records(split, "qa"):
        return None
    preds = _generate(ctx, qa_prompts(ctx, split), ctx.cfg.max_new_tokens_tofu)
    return _rouge_result(preds, _answers(ctx, split), tofu_rouge_l)


@metric("rouge_text", higher_is_better=True, splits=("forget",))
def rouge_text(ctx: EvalContext, split: str) -> MetricResult | None:
    """VerbMem (MUSE): ROUGE-L F1, unstemmed, of the greedy continuation of each text's prefix against
    the rest (of each completion record's prompt against its continuation, where the split has them)."""
    pairs = ctx.records(split, "completion")
    if pairs:  # MUSE's verbmem set: the prompt and the true continuation are given
        prompts = [ctx.tokenizer(clip(r["prompt"], ctx.cfg.max_length, keep="tail"), add_special_tokens=False)["input_ids"]
                   for r in pairs]
        return _rouge_result(_generate(ctx, prompts, ctx.cfg.max_new_tokens_text),
                             [r["continuation"] for r in pairs], rouge_l)
    recs = ctx.records(split, "text")
    if not recs:
        return None
    prompts, refs = [], []
    for r in recs:
        text = clip(r["text"], max(2 * ctx.cfg.text_prompt_tokens, ctx.cfg.text_prompt_tokens + ctx.cfg.max_new_tokens_text))
        ids = ctx.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < 2:
            continue
        cut = min(ctx.cfg.text_prompt_tokens, len(ids) // 2)
        prompts.append(ids[:cut])
        refs.append(ctx.tokenizer.decode(ids[cut : cut + ctx.cfg.max_new_tokens_text], skip_special_tokens=True))
    if not prompts:
        return None
    return _rouge_result(_generate(ctx, prompts, ctx.cfg.max_new_tokens_text), refs, rouge_l)
