"""The benchmark's MC items are at chance for every content-free scorer (benchmark.item_checks)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from moe_unlearn.benchmark.domains import DOMAINS
from moe_unlearn.benchmark.generator import balanced_facts, generate
from moe_unlearn.benchmark.item_checks import CHANCE, SCORERS, TOLERANCE, check_items, split_items
from moe_unlearn.benchmark.presets import PRESETS

SEEDS = range(1, 11)  # ten seeds, none of them a development or transfer seed


@pytest.mark.parametrize("n", [32, 64, 61])
def test_every_value_is_the_answer_and_offered_equally_often(n):
    attr = next(iter(DOMAINS.values())).attributes[0]
    facts = balanced_facts(attr, n, random.Random(n))
    answers = Counter(v for v, _ in facts)
    offered = Counter([v for v, _ in facts] + [d for _, ds in facts for d in ds])
    assert max(answers.values()) - min(answers.values()) <= 1 and set(answers) == set(attr.values)
    assert max(offered.values()) - min(offered.values()) <= 2
    assert all(len(set(ds)) == 3 and v not in ds for v, ds in facts)


def test_string_scorers_sit_at_chance_on_every_split_over_ten_seeds():
    build = PRESETS.get("default")
    hits: dict[tuple[str, str], list[float]] = {}
    for seed in SEEDS:
        bench = generate(build.generator, seed=seed)
        for split, items in split_items(bench).items():
            for name in SCORERS.names():
                hits.setdefault((name, split), []).extend(SCORERS.get(name)(bench, items))
    for (name, split), per in hits.items():
        assert abs(sum(per) / len(per) - CHANCE) <= TOLERANCE, (name, split, sum(per) / len(per))
    assert {s for _, s in hits} == {"forget", "retain", "holdout", "utility"}


def test_an_unbalanced_set_is_caught():
    """The check can fail: answers always the longest choice score 1.0 for `longest`."""
    bench = generate(PRESETS.get("tiny").generator, seed=0)
    rigged = [{**item, "answer": max(range(4), key=lambda i: len(item["choices"][i]))} for item in bench.splits["forget"].mc]
    assert sum(SCORERS.get("longest")(bench, rigged)) == len(rigged)


def test_the_untrained_model_scores_at_chance_on_the_tiny_preset():
    per_split: dict[str, list[float]] = {}
    for seed in (1, 2, 3):
        for split, acc in check_items(seed, preset="tiny")["untrained model"].items():
            per_split.setdefault(split, []).append(acc)
    for split, accs in per_split.items():
        assert abs(sum(accs) / len(accs) - CHANCE) <= 2 * TOLERANCE, (split, accs)  # 40-200 items per split
