"""Fixtures for the evaluation tests: a tiny random OLMoE and its tokenizer."""

from __future__ import annotations

import pytest

from moe_unlearn.models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer) of a tiny random OLMoE."""
    return tiny_model("olmoe", seed=0), tiny_tokenizer()
