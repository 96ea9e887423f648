"""RWKU's MMLU utility as RWKU scores it (jinzhuoran/RWKU LLaMA-Factory/src/llmtuner/eval/eval_mmlu.py):
a few-shot prompt from each row's `examples`, then the likeliest of the letters A-D after 'Answer:'."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from eval_helpers import FixedLogits, make_cfg

from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.rwku import mmlu_prompt

ROW = {"question": "Which gas do plants absorb?", "choices": ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"],
       "answer": 2, "task": "high_school_biology",
       "examples": [{"question": "What is 2 + 2?", "choices": ["3", "4", "5", "6"], "answer": 1}]}


def test_the_prompt_is_rwkus_few_shot_prompt():
    expected = ("The following are multiple choice questions (with answers) about high school biology.\n\n"
                "Question: What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\n"
                "Please following the previous examples and answer the given question.\n"
                "Question: Which gas do plants absorb?\nA. Oxygen\nB. Nitrogen\nC. Carbon dioxide\nD. Helium")
    assert mmlu_prompt(ROW) == expected


@pytest.mark.parametrize("letter, expected", [("C", 2 / 3), ("A", 1 / 3), ("D", 0.0)])
def test_the_likeliest_letter_is_the_answer(tiny, letter, expected):
    _, tok = tiny
    rows = [dict(ROW), dict(ROW, answer=0), dict(ROW, answer=2)]
    data = SimpleNamespace(forget=None, retain=None, holdout=None, utility_mc=rows)
    token = tok.encode(" " + letter, add_special_tokens=False)[-1]
    ctx = EvalContext(FixedLogits(token, len(tok)), tok, data, make_cfg())
    res = ctx.result("rwku_mmlu")
    assert res.value == pytest.approx(expected) and len(res.per_example) == 3


def test_rows_without_examples_are_not_rwkus(tiny):
    _, tok = tiny
    data = SimpleNamespace(forget=None, retain=None, holdout=None, utility_mc=[{k: v for k, v in ROW.items() if k != "examples"}])
    assert EvalContext(FixedLogits(0, len(tok)), tok, data, make_cfg()).result("rwku_mmlu") is None
