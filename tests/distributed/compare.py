"""What "2 processes give the numbers of 1 process" means: losses and metrics within 1e-4
relative, every adapter decision exactly, routing counts exactly but for a near-tie or two; a
resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REL = 1e-4
# Two processes sum gradients in another order, so weights agree to ~1e-7, not bit for bit: a
# token whose two candidate experts score within that of each other may pick the other one. One
# such flip moved 7 of the 328 routing numbers on one CPU (AMD EPYC, rmu-seuf under ZeRO-3: retain
# layer 2, 1 decision of 1,112); a real fault (a shard missed, a router not gathered) moves many.
ROUTING_NUMBERS_MOVED = 16  # two flips, with room
ROUTING_STEP = 0.06  # one decision's share of the shortest example's stability is about 0.05


def read_log(path: Path) -> list[dict]:
    return [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines()]


def _close(a, b) -> bool:
    return a == pytest.approx(b, rel=REL, abs=1e-6)


def assert_same_run(one: Path, two: Path) -> None:
    log1, log2 = read_log(one), read_log(two)
    assert [r["step"] for r in log1] == [r["step"] for r in log2] == [1, 2, 3, 4]
    for a, b in zip(log1, log2):
        numbers = [k for k in a if k not in ("step", "seconds")]
        assert set(numbers) == set(b) - {"step", "seconds"}
        assert all(_close(a[k], b[k]) for k in numbers), {k: (a[k], b[k]) for k in numbers}
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert (m1["processes"], m2["processes"]) == (1, 2)
    for split in ("forget", "retain", "holdout"):
        assert _close(m1[split]["nll"], m2[split]["nll"])
        assert m1[split]["mc_acc"] == m2[split]["mc_acc"]
    assert_same_routing(m1, m2)
    assert m1["memory"]["reference_bytes"] > 0 or m2["memory"]["reference_bytes"] == 0
    info1, info2 = m1["adapter_info"], m2["adapter_info"]
    if "trace" in info1:  # frequencies over every process's tokens
        assert info1["trace"]["critical"] == info2["trace"]["critical"]
    if "seuf" in info1:  # attribution over every process's sequences
        assert info1["seuf"]["targets"] == info2["seuf"]["targets"]
    if "keep_routing" in info1:  # every process holds every example's original routing
        assert info1["keep_routing"]["cache_bytes"] == info2["keep_routing"]["cache_bytes"] > 0
    if "grip" in info1:  # Gram matrices summed over processes, PTC statistics too
        assert info1["grip"]["null_dim"] == info2["grip"]["null_dim"]
        accepted = [[e["accepted"] for e in run["layers"]] for run in info1["grip"]["ptc"]]
        assert accepted == [[e["accepted"] for e in run["layers"]] for run in info2["grip"]["ptc"]]
    assert (one / "model" / "model.safetensors").is_file() and (two / "model" / "model.safetensors").is_file()


def _numbers(value, path: str = "") -> dict[str, float]:
    """Every number of a nested dict / list, by its path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _numbers(item, f"{path}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _numbers(item, f"{path}[{i}]").items()}
    return {path: value}


def assert_same_routing(m1: dict, m2: dict) -> None:
    """The routing metrics (stability, per layer, activation, per forget example) of two runs'
    metrics.json: the same numbers, but for the few a near-tie or two moves by one decision."""
    a, b = ({"routing": m["routing"], "per_example": m["per_example"]["forget"]["stability"]} for m in (m1, m2))
    a, b = _numbers(a), _numbers(b)
    assert a.keys() == b.keys()
    moved = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert len(moved) <= ROUTING_NUMBERS_MOVED, moved
    assert all(abs(x - y) <= ROUTING_STEP for x, y in moved.values()), moved


def assert_resumed(straight: Path, resumed: Path) -> None:
    assert json.loads((resumed / "metrics.json").read_text())["resumed"] is True
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(resumed)] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(straight)]
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (straight, resumed))
    assert m1["forget"] == m2["forget"] and m1["routing"] == m2["routing"]
