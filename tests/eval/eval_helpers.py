"""Synthetic QA/text/MC splits and configs for the evaluation tests (no benchmark build)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from moe_unlearn.config import build
from moe_unlearn.eval import EvalConfig


def _qa(n: int, tag: str) -> list[dict]:
    return [
        {
            "question": f"What is {tag}{i}?",
            "answer": f"val{i}",
            "paraphrased_answer": f"v{i}",
            "perturbed_answer": [f"x{i}", f"y{i}"],
        }
        for i in range(n)
    ]


def _mc(n: int, tag: str) -> list[dict]:
    return [{"question": f"Q {tag}{i}?", "choices": ["a", "bb", "c", "dd"], "answer": i % 4} for i in range(n)]


def _text(n: int, tag: str) -> list[dict]:
    return [{"text": f"The entity {tag}{i} lives at number {i * 7} and likes fruit {i}."} for i in range(n)]


def make_data(n: int = 6, *, mc: bool = True) -> SimpleNamespace:
    """UnlearnData-shaped object: forget/retain/holdout Splits (qa, text, mc) and utility_mc."""
    split = lambda tag: SimpleNamespace(qa=_qa(n, tag), text=_text(n, tag), mc=_mc(n, tag) if mc else None)  # noqa: E731
    return SimpleNamespace(forget=split("f"), retain=split("r"), holdout=split("h"), utility_mc=_mc(4, "u"))


def make_cfg(**overrides) -> EvalConfig:
    base = {"batch_size": 4, "max_new_tokens_qa": 6, "max_new_tokens_text": 8, "max_new_tokens_tofu": 6,
            "text_prompt_tokens": 12}
    base.update(overrides)
    return build(EvalConfig, base, "eval")


def perturbed(model: torch.nn.Module, scale: float = 0.05, seed: int = 1) -> torch.nn.Module:
    """A copy with every parameter nudged by scale x N(0, 1) noise."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return out


class FixedLogits(torch.nn.Module):
    """Prefers one token id everywhere: logits = 5 on `favourite`, 0 elsewhere."""

    def __init__(self, favourite: int, vocab: int = 256) -> None:
        super().__init__()
        self.favourite, self.vocab = favourite, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.favourite] = 5.0
        return SimpleNamespace(logits=logits)
