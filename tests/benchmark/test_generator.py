"""The fictitious-knowledge generator: determinism, splits, templates, distractors."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from moe_unlearn.benchmark.domains import DOMAINS
from moe_unlearn.benchmark.generator import GeneratorConfig, generate
from moe_unlearn.benchmark.presets import PRESETS
from moe_unlearn.errors import UserError

CFG = GeneratorConfig(entities_per_domain=12, holdout_entities=6)


def test_same_seed_same_records_other_seed_differs() -> None:
    a, b, c = generate(CFG, seed=1), generate(CFG, seed=1), generate(CFG, seed=2)
    assert a.splits["forget"].qa == b.splits["forget"].qa and a.train_text == b.train_text
    assert a.splits["forget"].qa != c.splits["forget"].qa


def test_splits_hold_the_right_entities_and_kinds() -> None:
    bench = generate(CFG, seed=0)
    n_attr = len(DOMAINS["pathogens"].attributes)
    forget, retain, holdout = (bench.splits[s] for s in ("forget", "retain", "holdout"))
    assert {r["domain"] for r in forget.qa} == {"pathogens"} == {r["domain"] for r in holdout.qa}
    assert {r["domain"] for r in retain.qa} == set(DOMAINS) - {"pathogens"}
    assert len(forget.qa) == len(forget.mc) == 12 * n_attr and len(forget.text) == 2 * len(forget.qa)
    assert len(holdout.qa) == 6 * n_attr and len(retain.qa) == 4 * 12 * n_attr
    assert not {r["entity"] for r in forget.qa} & {r["entity"] for r in holdout.qa}
    trained = {r["entity"] for r in bench.train_qa} | {r["entity"] for r in bench.train_text}
    assert not trained & {r["entity"] for r in holdout.qa}  # holdout is never trained on
    assert {r["domain"] for r in bench.utility_mc} == set(DOMAINS) - {"pathogens"}


def test_default_preset_is_big_enough() -> None:
    g = PRESETS.get("default").generator
    assert len(DOMAINS) >= 5 and g.entities_per_domain * len(DOMAINS) >= 300


def test_mc_distractors_come_from_the_same_attribute_pool() -> None:
    bench = generate(CFG, seed=0)
    for rec in bench.splits["retain"].mc + bench.utility_mc:
        attr = next(a for a in DOMAINS[rec["domain"]].attributes if a.name == rec["attribute"])
        assert len(rec["choices"]) == 4 == len(set(rec["choices"]))
        assert set(rec["choices"]) <= set(attr.values)
    qa = {(r["entity"], r["attribute"]): r["answer"] for r in bench.splits["retain"].qa}
    for rec in bench.splits["retain"].mc:
        assert rec["choices"][rec["answer"]] == qa[(rec["entity"], rec["attribute"])]
    answers = Counter(r["answer"] for r in bench.splits["retain"].mc)
    assert len(answers) == 4  # the right answer is not always in one position


def test_no_template_is_shared_between_domains() -> None:
    def skeleton(t: str) -> str:
        return re.sub(r"\{[ev]\}", "_", t).lower()

    owner: dict[str, str] = {}
    for d in DOMAINS.values():
        for a in d.attributes:
            for t in a.questions + a.statements:
                assert owner.setdefault(skeleton(t), d.name) == d.name, t


def test_forget_fraction_moves_the_rest_of_the_domain_to_retain() -> None:
    bench = generate(CFG, seed=0, forget_domain="music", forget_fraction=0.25)
    forget_entities = {r["entity"] for r in bench.splits["forget"].qa}
    assert len(forget_entities) == 3 and {r["domain"] for r in bench.splits["forget"].qa} == {"music"}
    music_retain = {r["entity"] for r in bench.splits["retain"].qa if r["domain"] == "music"}
    assert len(music_retain) == 9 and not music_retain & forget_entities
    assert {r["domain"] for r in bench.utility_mc} == set(DOMAINS) - {"music"}


@pytest.mark.parametrize(("domain", "fraction", "message"), [
    ("pathogen", 1.0, "did you mean 'pathogens'"), (None, 0.0, r"in \(0, 1\]"), (None, 1.5, r"in \(0, 1\]"),
])
def test_bad_forget_options(domain, fraction, message) -> None:
    with pytest.raises(UserError, match=message):
        generate(CFG, seed=0, forget_domain=domain, forget_fraction=fraction)
