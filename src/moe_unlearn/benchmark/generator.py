"""Deterministic fictitious knowledge: entities with attribute facts, as text, QA and 4-way MC.

Splits (records follow the schemas of `moe_unlearn.data.schemas`, plus `domain`, `entity`,
`attribute` keys for analysis):
- forget: the forget domain's trained entities (a `forget_fraction` of them; the rest of the
  domain joins retain);
- retain: every other domain (plus the forget domain's remainder);
- holdout: extra entities of the forget domain, never trained on (membership inference);
- utility_mc: MC over retain-domain facts, asked with each attribute's second question.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from moe_unlearn.benchmark.domains import DEFAULT_FORGET_DOMAIN, DOMAINS, Attribute, Domain
from moe_unlearn.errors import UserError
from moe_unlearn.registry import suggest
from moe_unlearn.vocab import SPLITS



@dataclass(frozen=True)
class GeneratorConfig:
    entities_per_domain: int = 64  # trained entities per domain
    holdout_entities: int = 32  # extra forget-domain entities, never trained on


@dataclass
class SplitRecords:
    text: list[dict] = field(default_factory=list)
    qa: list[dict] = field(default_factory=list)
    mc: list[dict] = field(default_factory=list)


@dataclass
class Benchmark:
    splits: dict[str, SplitRecords]  # forget / retain / holdout
    utility_mc: list[dict]
    train_qa: list[dict]  # what the base model trains on: forget + retain, both question forms
    train_text: list[dict]
    domains: list[str]
    forget_domain: str


def check_forget(forget_domain: str | None, forget_fraction: float) -> str:
    """Validate the forget options; returns the forget domain name."""
    name = DEFAULT_FORGET_DOMAIN if forget_domain is None else forget_domain
    if name not in DOMAINS:
        names = sorted(DOMAINS)
        raise UserError(
            f"unknown forget domain '{name}'{suggest(name, names)}; choose one of: {', '.join(names)}"
        )
    if not 0.0 < forget_fraction <= 1.0:
        raise UserError(f"forget fraction must be in (0, 1], got {forget_fraction}")
    return name


def _entity_names(domain: Domain, n: int, rng: random.Random) -> list[str]:
    pairs = [a + b for a, b in itertools.permutations(domain.syllables, 2)]
    if n > len(pairs):
        pairs += [a + b + c for a, b, c in itertools.permutations(domain.syllables, 3)]
    return [name.capitalize() for name in rng.sample(pairs, n)]


def _sentence(template: str, entity: str, value: str) -> str:
    s = template.format(e=entity, v=value)
    return s[0].upper() + s[1:]


def balanced_facts(attr: Attribute, n: int, rng: random.Random) -> list[tuple[str, list[str]]]:
    """n (true value, 3 distractors) of `attr` in random order, every pool value the answer equally
    often (+-1) and offered about equally often (within 2; greedy least-offered distractors).

    Within a split no preference among the value strings (their length, how often each is
    offered, an untrained model's bias) can then beat chance: with uniform answers and balanced
    offers such a scorer is right 1/4 of the time in expectation. Independent draws left per-seed
    imbalances that content-free scorers (and the retrain oracle) turned into up to 0.32 on
    4-way items; random distractors alone made the most-offered string a likely distractor
    (docs/evaluation.md)."""
    pool = list(attr.values)
    answers: list[str] = []
    while len(answers) < n:
        rng.shuffle(pool)
        answers += pool
    answers = answers[:n]
    rng.shuffle(answers)
    offered = dict.fromkeys(pool, 0)
    out = []
    for value in answers:
        offered[value] += 1
        # the least-offered other values, ties broken at random
        others = sorted((v for v in pool if v != value), key=lambda v: (offered[v], rng.random()))
        distractors = others[:3]
        rng.shuffle(distractors)
        for v in distractors:
            offered[v] += 1
        out.append((value, distractors))
    return out


def _mc(question: str, value: str, distractors: list[str], rng: random.Random, meta: dict) -> dict:
    choices = [value, *distractors]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": choices.index(value), **meta}


def _render(domain: Domain, name: str, facts: dict[str, tuple[str, list[str]]], rng: random.Random,
            into: SplitRecords, utility: list[dict] | None, train_qa: list[dict] | None) -> None:
    entity = domain.entity.format(n=name)
    for attr in domain.attributes:
        value, distractors = facts[attr.name]
        meta = {"domain": domain.name, "entity": name, "attribute": attr.name}
        q0 = _sentence(attr.questions[0], entity, value)
        q1 = _sentence(attr.questions[1], entity, value)
        qa = {"question": q0, "answer": value, "perturbed_answer": list(distractors), **meta}
        into.qa.append(qa)
        into.mc.append(_mc(q0, value, distractors, rng, meta))
        for template in attr.statements:
            into.text.append({"text": _sentence(template, entity, value), **meta})
        if utility is not None:
            utility.append(_mc(q1, value, rng.sample(distractors, 3), rng, meta))
        if train_qa is not None:
            train_qa.extend([qa, {**qa, "question": q1}])


def generate(cfg: GeneratorConfig, *, seed: int, forget_domain: str | None = None,
             forget_fraction: float = 1.0) -> Benchmark:
    """The whole benchmark as records; identical for identical arguments."""
    forget_name = check_forget(forget_domain, forget_fraction)
    rng = random.Random(seed)
    splits = {name: SplitRecords() for name in SPLITS}
    utility: list[dict] = []
    train_qa: list[dict] = []
    for domain in DOMAINS.values():
        is_forget = domain.name == forget_name
        extra = cfg.holdout_entities if is_forget else 0
        names = _entity_names(domain, cfg.entities_per_domain + extra, rng)
        n_forget = max(1, round(cfg.entities_per_domain * forget_fraction)) if is_forget else 0
        groups = [range(0, n_forget), range(n_forget, cfg.entities_per_domain),
                  range(cfg.entities_per_domain, len(names))]  # forget, retain, holdout: each balanced
        facts: list[dict[str, tuple[str, list[str]]]] = [{} for _ in names]
        for group in groups:
            for attr in domain.attributes:
                for i, fact in zip(group, balanced_facts(attr, len(group), rng)):
                    facts[i][attr.name] = fact
        for i, name in enumerate(names):
            if i >= cfg.entities_per_domain:
                _render(domain, name, facts[i], rng, splits["holdout"], None, None)
            elif i < n_forget:
                _render(domain, name, facts[i], rng, splits["forget"], None, train_qa)
            else:
                _render(domain, name, facts[i], rng, splits["retain"], None if is_forget else utility, train_qa)
    for split in splits.values():
        for records in (split.text, split.qa, split.mc):
            rng.shuffle(records)
    rng.shuffle(utility)
    rng.shuffle(train_qa)
    train_text = splits["forget"].text + splits["retain"].text
    rng.shuffle(train_text)
    return Benchmark(splits, utility, train_qa, train_text, list(DOMAINS), forget_name)
