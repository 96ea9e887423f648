"""RWKU's forget / neighbor probes and its MIA loss, as the RWKU paper (and SEUF, which uses it) reports them.

- rwku_rouge: ROUGE-L RECALL (the `rouge-score` library, no stemming) of the greedy answer
  against the true answer, per probe; the value is the mean over every probe, and each
  record's `group` (FB fill-in-the-blank, QA question answering, AA adversarial attack) gets
  its own mean, stored as `<split>.rwku_rouge_<group>`. RWKU generates 30 new tokens
  (eval.max_new_tokens_qa: 30 in the recipe) and scores with the `rouge` package, whose
  tokenisation differs slightly from rouge-score's.
- text_nll: mean over a split's texts of the mean token negative log-likelihood (RWKU's MIA
  "LOSS" on its forget_mia / retain_mia sets; after unlearning the forget one should rise).
- rwku_mmlu: RWKU's MMLU utility, few-shot from each row's `examples`, the letter A-D whose token
  the model finds likeliest after "Answer:" (jinzhuoran/RWKU LLaMA-Factory/src/llmtuner/eval/eval_mmlu.py).
"""

from __future__ import annotations

import torch
from rouge_score import rouge_scorer

from moe_unlearn.data.tokenize import IGNORE
from moe_unlearn.eval.batches import make_batches
from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.generation import greedy_generate, qa_prompts
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import nanmean

_RECALL = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall: longest common subsequence / reference length, in words."""
    return float(_RECALL.score(reference, prediction)["rougeL"].recall)


def group_means(values: list[float], groups: list[str | None]) -> dict[str, float | None]:
    """Mean of the values of each named group, in first-seen order (records without a group skipped)."""
    out: dict[str, list[float]] = {}
    for v, g in zip(values, groups):
        if g is not None:
            out.setdefault(str(g), []).append(v)
    return {g: nanmean(vs) for g, vs in out.items()}


@metric("rwku_rouge", higher_is_better=True, splits=("forget", "retain"), detail_keys=("FB", "QA", "AA"))
def rwku_rouge(ctx: EvalContext, split: str) -> MetricResult | None:
    """RWKU probes: ROUGE-L recall of the greedy answer, overall and per record group (FB / QA / AA)."""
    recs = ctx.records(split, "qa")
    if not recs:
        return None
    preds = greedy_generate(ctx.model, ctx.tokenizer, qa_prompts(ctx, split), max_new_tokens=ctx.cfg.max_new_tokens_qa,
                            batch_size=ctx.cfg.batch_size, progress=ctx.progress)
    per = [rouge_l_recall(p, str(r["answer"])) for p, r in zip(preds, recs)]
    details = dict(group_means(per, [r.get("group") for r in recs]))
    details["samples"] = [{"prediction": p, "reference": r["answer"]} for p, r in zip(preds[:3], recs[:3])]
    return MetricResult(nanmean(per), per, details)


@metric("text_nll", higher_is_better=False)
def text_nll(ctx: EvalContext, split: str) -> MetricResult | None:
    """Mean over a split's texts of the mean token negative log-likelihood (RWKU's MIA loss)."""
    stats = ctx.text_stats(split)
    if stats is None:
        return None
    per = [float(-x) for x in stats.mean_logp()]
    return MetricResult(nanmean(per), per)


LETTERS = ("A", "B", "C", "D")  # eval_mmlu.py line 6


def mmlu_question(record: dict, *, with_answer: bool) -> str:
    """One MMLU question as RWKU writes it (eval_mmlu.py lines 9-17): 'Question: q', a line per
    choice 'A. c', and with the answer 'Answer: X' and a blank line."""
    text = "Question: " + str(record["question"])
    for letter, choice in zip(LETTERS, record["choices"]):
        text += f"\n{letter}. {choice}"
    return text + (f"\nAnswer: {LETTERS[int(record['answer'])]}\n\n" if with_answer else "")


def mmlu_prompt(record: dict) -> str:
    """RWKU's few-shot MMLU prompt (eval_mmlu.py lines 20-26 and 36-38): the subject header, each
    of the row's `examples` with its answer, the instruction, then the question without one."""
    header = f"The following are multiple choice questions (with answers) about {str(record.get('task', '')).replace('_', ' ')}.\n\n"
    shots = "".join(mmlu_question(e, with_answer=True) for e in record.get("examples") or [])
    return (header + shots + "Please following the previous examples and answer the given question.\n"
            + mmlu_question(record, with_answer=False))


def _letter_examples(tokenizer, prompt: str, *, chat_template: bool, max_length: int) -> list[dict]:
    """The prompt (in the chat template, as RWKU, when the tokenizer has one), then 'Answer:', each
    followed by one candidate: the last token of ' A' .. ' D' (eval_mmlu.py lines 43-49)."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)
        ids = list(tokenizer(prompt + "Answer:", add_special_tokens=False)["input_ids"])
    else:
        ids = list(tokenizer(prompt + "Answer:", add_special_tokens=True)["input_ids"])
    ids = ids[-(max_length - 1):]
    out = []
    for letter in LETTERS:
        token = tokenizer.encode(" " + letter, add_special_tokens=False)[-1]
        out.append({"input_ids": ids + [token], "labels": [IGNORE] * len(ids) + [token]})
    return out


@metric("rwku_mmlu", higher_is_better=True, scope="global")
def rwku_mmlu(ctx: EvalContext) -> MetricResult | None:
    """RWKU's MMLU utility: few-shot, accuracy of the likeliest answer letter (4-choice rows with examples)."""
    recs = [r for r in ctx.records("utility", "mc") or [] if r.get("examples") is not None and len(r["choices"]) == 4]
    if not recs:
        return None
    examples = [ex for r in recs for ex in _letter_examples(ctx.tokenizer, mmlu_prompt(r),
                                                             chat_template=ctx.cfg.chat_template,
                                                             max_length=ctx.cfg.max_length)]
    logp = ctx.score(make_batches(examples, ctx.global_batch, ctx.pad_id), desc="eval RWKU MMLU").sum_logp()
    picks = torch.argmax(logp.view(len(recs), len(LETTERS)), dim=1).tolist()
    per = [float(p == int(r["answer"])) for p, r in zip(picks, recs)]
    return MetricResult(nanmean(per), per)
