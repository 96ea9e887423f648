"""MC choices, and TOFU's answers to one question, scored over one forward of their shared
question equal full-sequence scoring."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from moe_unlearn.eval.batches import make_batches, mc_examples, shared_prompt
from moe_unlearn.eval.context import EvalContext, eval_mode
from moe_unlearn.models import tiny_model, tiny_tokenizer
from moe_unlearn.models.archs import TINY_SPECS
from tests.eval.eval_helpers import make_cfg

RECORDS = [
    {"question": "Which organ does the Tylquil virus attack first?", "choices": ["the heart", "lungs", "a b c d", "x"],
     "answer": 0},
    {"question": "Q?", "choices": ["alpha beta", "gamma"], "answer": 1},  # short prompt, two choices
    {"question": "How does it spread?", "choices": ["raw milk", "tick bites", "open wounds"], "answer": 2},
    # cut from the left to fit max_length, by a different amount per choice: no shared prompt
    {"question": " ".join(f"word{i}" for i in range(40)), "choices": ["a", "much longer answer here"], "answer": 0},
]


def _tokens_forwarded(model: torch.nn.Module) -> list[int]:
    seen: list[int] = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["input_ids"].numel()), with_kwargs=True)
    return seen


@pytest.mark.parametrize("arch", list(TINY_SPECS))
def test_shared_prompt_scores_equal_full_sequences(arch):
    model, tok = tiny_model(arch, seed=0), tiny_tokenizer()
    cfg = make_cfg(batch_size=2, max_length=96)
    data = SimpleNamespace(forget=SimpleNamespace(qa=None, text=None, mc=RECORDS), retain=None, holdout=None,
                           utility_mc=None)
    examples, sizes = mc_examples(tok, RECORDS, cfg)
    assert [shared_prompt(examples[i:i + n]) is None for i, n in zip([0, 4, 6, 9], sizes)] == [False, False, False, True]
    with eval_mode(model), torch.no_grad():
        full = EvalContext(model, tok, data, cfg).score(make_batches(examples, 2, tok.pad_token_id)).sum_logp()
        seen = _tokens_forwarded(model)
        logliks, answers = EvalContext(model, tok, data, cfg).mc_loglik("forget")
    assert answers == [0, 1, 2, 0]
    assert torch.allclose(torch.cat(logliks), full, atol=1e-4, rtol=1e-5)
    full_tokens = sum(len(ex["input_ids"]) for ex in examples)
    if arch in ("gpt_oss", "llama4_text"):  # sliding / chunked attention: every choice in full
        assert sum(seen) >= full_tokens
    else:
        assert sum(seen) < full_tokens  # (padded) the shared questions ran once, not once per choice


def test_a_run_of_several_processes_or_no_shared_prompt_scores_in_full(monkeypatch):
    model, tok = tiny_model("olmoe", seed=0), tiny_tokenizer()
    data = SimpleNamespace(forget=SimpleNamespace(qa=None, text=None, mc=RECORDS[:3]), retain=None, holdout=None,
                           utility_mc=None)
    cfg = make_cfg(batch_size=2)
    with eval_mode(model), torch.no_grad():
        shared, _ = EvalContext(model, tok, data, cfg).mc_loglik("forget")
        monkeypatch.setattr("moe_unlearn.eval.context.world_size", lambda: 2)
        calls = _tokens_forwarded(model)
        monkeypatch.setattr("moe_unlearn.eval.context.EvalContext.global_batch", property(lambda self: 2))
        full, _ = EvalContext(model, tok, data, cfg).mc_loglik("forget")
    assert torch.allclose(torch.cat(shared), torch.cat(full), atol=1e-4)
    examples, _ = mc_examples(tok, RECORDS[:3], cfg)
    assert len(calls) == -(-len(examples) // 2)  # every choice in full, 2 rows a forward


def test_a_lora_wrapped_model_shares_the_question_too():
    from peft import LoraConfig, get_peft_model

    tok = tiny_tokenizer()
    model = get_peft_model(tiny_model("olmoe", seed=0), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    cfg = make_cfg(batch_size=2, max_length=96)
    data = SimpleNamespace(forget=SimpleNamespace(qa=None, text=None, mc=RECORDS[:3]), retain=None, holdout=None,
                           utility_mc=None)
    examples, _ = mc_examples(tok, RECORDS[:3], cfg)
    with eval_mode(model), torch.no_grad():
        full = EvalContext(model, tok, data, cfg).score(make_batches(examples, 2, tok.pad_token_id)).sum_logp()
        seen = _tokens_forwarded(model)
        logliks, _ = EvalContext(model, tok, data, cfg).mc_loglik("forget")
    assert torch.allclose(torch.cat(logliks), full, atol=1e-4, rtol=1e-5)
    assert sum(seen) < sum(len(ex["input_ids"]) for ex in examples)  # the wrapper passes the cache through


def test_choices_run_sorted_by_length_so_short_answers_are_not_padded_to_long_ones():
    records = [{"question": "How does it spread?", "choices": ["a", "a much much longer answer here", "b"], "answer": 0},
               {"question": "Which organ?", "choices": ["c", "d", "another rather long answer"], "answer": 1}]
    model, tok = tiny_model("olmoe", seed=0), tiny_tokenizer()
    cfg = make_cfg(batch_size=2, max_length=96)
    data = SimpleNamespace(forget=SimpleNamespace(qa=None, text=None, mc=records), retain=None, holdout=None,
                           utility_mc=None)
    examples, _ = mc_examples(tok, records, cfg)
    groups = [shared_prompt(examples[i:i + 3]) for i in (0, 3)]
    tails = sorted(len(t["input_ids"]) for _, ts in groups for t in ts)
    with eval_mode(model), torch.no_grad():
        full = EvalContext(model, tok, data, cfg).score(make_batches(examples, 2, tok.pad_token_id)).sum_logp()
        seen = _tokens_forwarded(model)
        logliks, _ = EvalContext(model, tok, data, cfg).mc_loglik("forget")
    assert torch.allclose(torch.cat(logliks), full, atol=1e-4, rtol=1e-5)  # back in the records' order
    prefixes = 2 * max(len(p) for p, _ in groups)
    assert seen == [prefixes, *(2 * tails[i + 1] for i in range(0, 6, 2))]  # 3 forwards of 2, each its own width
    assert sum(seen) - prefixes < 6 * tails[-1]  # one forward of all six pads each to the longest


@pytest.mark.parametrize("paraphrased", [False, True])
def test_truth_ratio_answers_share_their_question_and_equal_full_sequences(paraphrased):
    """TOFU's answer, paraphrase and perturbed answers of a question run over one forward of it:
    the same length-normalised log-likelihoods as each (question, answer) scored in full."""
    from moe_unlearn.eval.batches import qa_examples
    from moe_unlearn.eval.tofu import perturbed_scores

    records = [{"question": r["question"], "answer": r["choices"][0], "perturbed_answer": r["choices"][1:],
                **({"paraphrased_answer": r["choices"][0] + " indeed"} if paraphrased and i != 1 else {})}
               for i, r in enumerate(RECORDS[:3])]
    model, tok = tiny_model("olmoe", seed=0), tiny_tokenizer()
    cfg = make_cfg(batch_size=2, max_length=96)
    data = SimpleNamespace(forget=SimpleNamespace(qa=records, text=None, mc=None), retain=None, holdout=None,
                           utility_mc=None)

    def full(key: str) -> torch.Tensor:
        pairs = [{"question": r["question"], "answer": r.get(key) or r["answer"]} for r in records]
        return EvalContext(model, tok, data, cfg).score(
            make_batches(qa_examples(tok, pairs, cfg), 2, tok.pad_token_id)).mean_logp()

    with eval_mode(model), torch.no_grad():
        answer, base = full("answer"), full("paraphrased_answer")
        pairs = [{"question": r["question"], "answer": a} for r in records for a in r["perturbed_answer"]]
        examples = qa_examples(tok, pairs, cfg)
        perturbed = EvalContext(model, tok, data, cfg).score(make_batches(examples, 2, tok.pad_token_id)).mean_logp()
        seen = _tokens_forwarded(model)
        scored = perturbed_scores(EvalContext(model, tok, data, cfg), "forget")
    assert scored.base_key == ("mixed" if paraphrased else "answer")
    assert torch.allclose(scored.answer, answer, atol=1e-5)
    assert torch.allclose(scored.base, base, atol=1e-5)
    assert torch.allclose(torch.cat(scored.perturbed), perturbed, atol=1e-5)
    bases = [{"question": r["question"], "answer": r.get("paraphrased_answer") or r["answer"]} for r in records]
    every = qa_examples(tok, [{"question": r["question"], "answer": r["answer"]} for r in records]
                        + bases * paraphrased + pairs, cfg)
    assert sum(seen) < sum(len(ex["input_ids"]) for ex in every)  # (padded) each question ran once, not per answer
