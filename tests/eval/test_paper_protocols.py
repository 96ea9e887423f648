"""Each paper's evaluation protocol, pinned by a value computed BY HAND from the source's formula
(never taken from our own functions).

Sources (read at these commits): TOFU locuslab/tofu bdc209e (aggregate_eval_stat.py,
config/eval_everything.yaml); open-unlearning locuslab/open-unlearning d3d7cf9
(src/evals/metrics/memorization.py truth_ratio, src/evals/metrics/privacy.py ks_test,
configs/eval/tofu_metrics/*_Truth_Ratio.yaml, configs/generation/default.yaml); MUSE
swj0419/muse_bench fcd6651 (metrics/knowmem.py, metrics/privleak.py, eval.py).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from moe_unlearn.config import build
from moe_unlearn.errors import UserError
from moe_unlearn.eval import EvalConfig, EvalContext, evaluate_model
from moe_unlearn.eval import generation, tofu
from moe_unlearn.eval.generation import MUSE_STOP_STRINGS, cut_at_stop_strings, muse_knowmem_prompt
from moe_unlearn.eval.privacy import muse_auc, privleak
from moe_unlearn.eval.tofu import PerturbedScores, forget_quality_pvalue
from moe_unlearn.report.tables import TABLES

from eval_helpers import make_cfg, make_data

# ---- TOFU truth ratio: forget min(R, 1/R), other sets max(0, 1 - R) -----------------------------------
# Four questions, length-normalised probabilities written by hand; R = p~(perturbed) / p~(paraphrased),
# the perturbed side the geometric mean over the perturbed answers:
#   q1: 0.2 / 0.4 = 0.5   q2: 0.4 / 0.2 = 2   q3: 0.3 / 0.3 = 1   q4: sqrt(0.1 * 0.4) / 0.8 = 0.2 / 0.8 = 0.25
BASE = [0.4, 0.2, 0.3, 0.8]
PERTURBED = [[0.2], [0.4], [0.3], [0.1, 0.4]]
R = [0.5, 2.0, 1.0, 0.25]
# open-unlearning closer_to_1_better: mean min(R, 1/R) = (0.5 + 0.5 + 1 + 0.25) / 4
CLOSER_TO_1 = 2.25 / 4
# open-unlearning true_better: mean max(0, 1 - R) = (0.5 + 0 + 0 + 0.75) / 4
TRUE_BETTER = 1.25 / 4


@pytest.fixture
def hand_ratios(monkeypatch):
    """Every split's perturbed scores are the hand-written ones above."""
    scores = PerturbedScores(None, torch.tensor(BASE).log(), [torch.tensor(p).log() for p in PERTURBED], "paraphrased_answer")
    monkeypatch.setattr(tofu, "perturbed_scores", lambda ctx, split: scores)


def _ctx(retrained=None) -> EvalContext:
    return EvalContext(None, None, None, make_cfg(), retrained=retrained)  # type: ignore[arg-type]


def test_forget_truth_ratio_is_open_unlearnings_closer_to_1_better(hand_ratios):
    ctx = _ctx()
    forget, retain = ctx.result("truth_ratio", "forget"), ctx.result("truth_ratio", "retain")
    assert forget.value == pytest.approx(CLOSER_TO_1)
    assert forget.details["stat"] == "closer_to_1_better"
    assert forget.details["true_better"] == pytest.approx(TRUE_BETTER)  # the other form, under its own key
    assert retain.value == pytest.approx(TRUE_BETTER) and retain.details["stat"] == "true_better"
    assert forget.per_example == pytest.approx(R) == retain.per_example  # raw R, whatever the aggregate


def test_forget_truth_ratio_lands_in_metrics_json_and_the_tofu_table(hand_ratios, tiny):
    model, tok = tiny
    out = evaluate_model(model, tok, make_data(), make_cfg(metrics=["truth_ratio"]), progress=False)
    assert out["forget"]["truth_ratio"] == pytest.approx(CLOSER_TO_1)
    assert out["forget"]["truth_ratio_true_better"] == pytest.approx(TRUE_BETTER)
    assert out["forget"]["truth_ratio_closer_to_1_better"] == pytest.approx(CLOSER_TO_1)
    assert out["retain"]["truth_ratio"] == out["holdout"]["truth_ratio"] == pytest.approx(TRUE_BETTER)
    column = dict(TABLES.get("tofu").columns)["forget truth ratio"]
    assert column(json.loads(json.dumps(out))) == pytest.approx(CLOSER_TO_1)
    # a metrics.json written before: truth_ratio held max(0, 1 - R), the forget statistic had its own key
    assert column({"forget": {"truth_ratio": TRUE_BETTER, "truth_ratio_tofu_forget_stat": CLOSER_TO_1}}) == CLOSER_TO_1


def test_forget_quality_ks_tests_the_raw_ratios(hand_ratios):
    """The KS test reads the per-question R, not its aggregate. Own R sorted 0.25 0.5 1 2 against the
    retrained model's 1.2 1.3 1.4 1.5: the ECDFs differ by at most 3/4 (after 1 and before 2). With
    n = m = 4, of the C(8, 4) = 70 merge orders the ones never 3 or more steps apart number 54 (the
    walk d = i - j kept in [-2, 2] has 1, 2, 3, 6, 9, 18, 27, 54 ways), so p = P(D >= 3/4) = 16/70.
    Had min(R, 1/R) been tested (all <= 1 < 1.2: D = 1) p would be 2/70."""
    retrained = [1.2, 1.3, 1.4, 1.5]
    ctx = _ctx({"per_example": {"forget": {"truth_ratio": retrained}}})
    assert ctx.result("forget_quality").value == pytest.approx(16 / 70)
    # TOFU's aggregate_eval_stat.py KS-tests exp(perturbed loss - paraphrased loss) = 1/R: the same p
    assert forget_quality_pvalue([1 / r for r in R], [1 / r for r in retrained]) == pytest.approx(16 / 70)


# ---- TOFU ROUGE: its own 200-token generation; KnowMem keeps 32 ---------------------------------------
def test_tofu_rouge_asks_for_200_new_tokens_and_knowmem_for_its_own(monkeypatch, tiny):
    model, tok = tiny
    asked: dict[str, int] = {}

    def fake_generate(model, tokenizer, prompts, *, max_new_tokens, batch_size, progress=False, stops=()):
        asked["knowmem" if stops else "tofu"] = max_new_tokens
        return ["val0"] * len(prompts)

    monkeypatch.setattr(generation, "greedy_generate", fake_generate)
    cfg = build(EvalConfig, {"batch_size": 4}, "eval")
    ctx = EvalContext(model, tok, make_data(), cfg)
    ctx.result("tofu_rouge", "forget")
    ctx.result("rouge_qa", "forget")
    # open-unlearning configs/generation/default.yaml: max_new_tokens 200; MUSE eval.py: knowmem 32
    assert asked == {"tofu": 200, "knowmem": 32}


# ---- MUSE KnowMem: few-shot prompt and stop strings --------------------------------------------------
ICL = [{"question": "Who wrote Hamlet?", "answer": "Shakespeare"}, {"question": "What is 2 + 2?", "answer": "4"}]
# muse_bench metrics/knowmem.py: each pair "Question: q\nAnswer: a\n\n", then "Question: q\nAnswer: "
PROMPT = ("Question: Who wrote Hamlet?\nAnswer: Shakespeare\n\n"
          "Question: What is 2 + 2?\nAnswer: 4\n\n"
          "Question: What is the capital of France?\nAnswer: ")


def test_muse_knowmem_prompt_from_two_icl_pairs():
    assert muse_knowmem_prompt("What is the capital of France?", ICL) == PROMPT


def test_muse_stop_strings_cut_the_answer():
    assert MUSE_STOP_STRINGS == ("\n\n", "\nQuestion", "Question:")
    assert cut_at_stop_strings("Paris\n\nQuestion: What is 2 + 2?", MUSE_STOP_STRINGS) == "Paris"
    assert cut_at_stop_strings("Paris\nQuestion 2", MUSE_STOP_STRINGS) == "Paris"
    assert cut_at_stop_strings("Paris. Question: why?", MUSE_STOP_STRINGS) == "Paris. "
    assert cut_at_stop_strings("\n\nParis", MUSE_STOP_STRINGS) == ""  # MUSE cuts the raw text, before any strip


class _Scripted(torch.nn.Module):
    """Continues every prompt with the same fixed text; records the prompts it was given."""

    def __init__(self, tokenizer, text: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_position_embeddings=None)
        self.continuation = tokenizer(text, add_special_tokens=False)["input_ids"]
        self.prompts: list[list[int]] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        self.prompts += [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
        tail = torch.tensor(self.continuation[:max_new_tokens]).expand(len(input_ids), -1)
        return torch.cat([input_ids, tail], dim=1)


def _capital_data() -> SimpleNamespace:
    qa = [{"question": "What is the capital of France?", "answer": "Paris"}]
    return SimpleNamespace(forget=SimpleNamespace(qa=qa), retain=SimpleNamespace(qa=qa))


def test_knowmem_scores_the_answer_cut_at_the_stop_strings(tiny):
    _, tok = tiny  # character-level: it has "\n" but no "\n\n" token, so the model goes on with "\nQuestion"
    model = _Scripted(tok, "Paris\nQuestion: What is 2 + 2?")
    res = EvalContext(model, tok, _capital_data(), make_cfg(max_new_tokens_qa=32)).result("rouge_qa", "forget")
    # "Paris" vs "Paris": F1 = 1 (uncut, "paris question what is 2 2" would give P = 1/6, R = 1, F1 = 2/7)
    assert res.value == pytest.approx(1.0)
    assert res.details["samples"][0]["prediction"] == "Paris"


def test_knowmem_prompts_are_few_shot_where_icl_records_are_given(tiny, tmp_path):
    _, tok = tiny
    icl = tmp_path / "forget_qa_icl.jsonl"
    icl.write_text("".join(json.dumps(r) + "\n" for r in ICL))
    cfg = make_cfg(knowmem_icl={"forget": {"path": str(icl), "kind": "qa"}}, max_new_tokens_qa=32, max_length=256)
    model = _Scripted(tok, "Paris")
    ctx = EvalContext(model, tok, _capital_data(), cfg)
    ctx.result("rouge_qa", "forget")
    ctx.result("rouge_qa", "retain")
    few_shot, zero_shot = model.prompts
    assert few_shot == tok(PROMPT, add_special_tokens=True)["input_ids"]  # tokenized as MUSE does, specials included
    assert tok.decode(zero_shot) == "What is the capital of France?"  # no ICL records for retain: the plain question


def test_eval_config_checks_the_new_keys():
    assert build(EvalConfig, {}, "eval").max_new_tokens_tofu == 200
    with pytest.raises(UserError, match="eval.max_new_tokens_tofu"):
        build(EvalConfig, {"max_new_tokens_tofu": 0}, "eval")
    with pytest.raises(UserError, match="eval.knowmem_icl.forget.kind"):
        build(EvalConfig, {"knowmem_icl": {"forget": {"path": "icl.jsonl", "kind": "text"}}}, "eval")


# ---- MUSE PrivLeak: the report note's direction ------------------------------------------------------
def test_muse_note_reads_very_negative_privleak_as_more_familiar():
    """MUSE: AUC over (forget = 0, holdout = 1) with -loss as the member score; a model that still knows
    the forget set scores every forget text above every holdout text: AUC 0, and against a retrained
    AUC of 0.5, PrivLeak = (0 - 0.5) / 0.5 x 100 = -100. The forget set looking less familiar than
    holdout gives AUC 1 and PrivLeak +100."""
    familiar, unseen = [-1.0, -1.5], [-4.0, -5.0]  # mean log p: the forget texts are the likelier ones
    assert privleak(muse_auc(familiar, unseen), 0.5) == pytest.approx(-100.0)
    assert privleak(muse_auc(unseen, familiar), 0.5) == pytest.approx(100.0)
    note = " ".join(TABLES.get("muse").notes)
    assert "very negative = the forget set looks MORE familiar than unseen data (under-unlearned" in note
    assert "positive = it looks less familiar (over-unlearned)" in note
