"""Content-free scorers of the benchmark's MC items: each must score at chance on every split.

An MC set that a scorer blind to the facts can beat measures artefacts, not knowledge, and
then neither the original model's score nor the oracle's means what it says. Each scorer
below sees everything but the facts: the choice strings (their length, how often each string
is offered) or a model of the same architecture that was never trained. Like the
eval suite's MC, the first choice wins a tie, and choices are shuffled per item, so a tie is
a coin flip.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch

from moe_unlearn.benchmark.base_model import corpus_texts, eval_data, new_model, train_tokenizer
from moe_unlearn.benchmark.generator import Benchmark, generate
from moe_unlearn.benchmark.presets import PRESETS, BuildConfig
from moe_unlearn.registry import Registry

Scorer = Callable[[Benchmark, list[dict]], list[float]]
SCORERS: Registry[Scorer] = Registry("item scorer")
CHANCE, TOLERANCE = 0.25, 0.05


def _pick(items: list[dict], score: Callable[[str], float]) -> list[float]:
    """1.0 where the choice with the highest score (first on a tie) is the answer."""
    out = []
    for item in items:
        scores = [score(c) for c in item["choices"]]
        out.append(float(scores.index(max(scores)) == item["answer"]))
    return out


@SCORERS.register("longest")
def longest(bench: Benchmark, items: list[dict]) -> list[float]:
    """The longest choice string."""
    return _pick(items, len)


@SCORERS.register("shortest")
def shortest(bench: Benchmark, items: list[dict]) -> list[float]:
    """The shortest choice string."""
    return _pick(items, lambda c: -len(c))


@SCORERS.register("frequent")
def frequent(bench: Benchmark, items: list[dict]) -> list[float]:
    """The choice string offered most often across the split's items (a test-taker's heuristic)."""
    counts = Counter(c for item in items for c in item["choices"])
    return _pick(items, lambda c: counts[c])


def split_items(bench: Benchmark) -> dict[str, list[dict]]:
    """The MC items of every split the eval suite scores (utility included)."""
    return {**{name: s.mc for name, s in bench.splits.items()}, "utility": bench.utility_mc}


def random_model_scores(bench: Benchmark, build: BuildConfig, seed: int) -> dict[str, list[float]]:
    """Per-item MC correctness of an untrained model of the benchmark's architecture (eval's own MC scorer)."""
    from moe_unlearn.eval import EvalConfig, evaluate_model

    tok = train_tokenizer(corpus_texts(bench), build.model.vocab_size)
    torch.manual_seed(seed)
    model = new_model(build.model, tok, build.train.max_length)
    cfg = EvalConfig(metrics=["mc_acc", "utility_mc"], max_examples=None, max_length=build.train.max_length)
    res = evaluate_model(model, tok, eval_data(bench), cfg, progress=False)
    per = res["per_example"]
    return {**{s: per[s]["mc_acc"] for s in bench.splits}, "utility": per["utility_mc"]}


def check_items(seed: int, *, preset: str = "default", model: bool = True) -> dict[str, dict[str, float]]:
    """{scorer: {split: accuracy}} for one benchmark seed (`model`: include the untrained model)."""
    build = PRESETS.get(preset)
    bench = generate(build.generator, seed=seed)
    items = split_items(bench)
    out = {name: {split: sum(v) / len(v) for split, mc in items.items() if (v := SCORERS.get(name)(bench, mc))}
           for name in SCORERS.names()}
    if model:
        out["untrained model"] = {s: sum(v) / len(v) for s, v in random_model_scores(bench, build, seed).items()}
    return out
