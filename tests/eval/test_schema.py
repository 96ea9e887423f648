"""metrics.json has one schema (eval/schema.py): every key a module names is declared there, no
module types a key path by hand, the paths are where the runner puts results, and the table
arrows follow the metrics' declared directions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from moe_unlearn.eval.metric import METRICS, MetricResult
from moe_unlearn.eval.runner import place_global, place_split
from moe_unlearn.eval.schema import (RUN_FIELDS, SPLITS, STABILITY, checked_keys, metric_key, metric_keys, run_key,
                                     run_metrics, timing)

SRC = Path(__file__).resolve().parents[2] / "src" / "moe_unlearn"
# where key paths may be spelled: the schema and the metric declarations/placement
DECLARING = {SRC / "eval" / "schema.py", SRC / "eval" / "metric.py", SRC / "eval" / "runner.py"}


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    out = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name:
                out.append((path, node))
    return out


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def test_every_key_a_module_names_is_declared():
    named = 0
    for path, call in _calls("metric_key"):
        keys = {kw.arg: kw.value for kw in call.keywords}
        name = _literal(call.args[0]) if call.args else None
        if name is None:
            continue  # a parameter (the test below reads the resulting keys)
        split_node = call.args[1] if len(call.args) > 1 else keys.get("split")
        detail_node = call.args[2] if len(call.args) > 2 else keys.get("detail")
        m = METRICS.get(name)
        splits = [_literal(split_node)] if _literal(split_node) or split_node is None else list(m.splits)
        detail = _literal(detail_node)
        for split in splits:
            if detail_node is None or detail is not None:
                assert metric_key(name, split, detail).path, (path, ast.unparse(call))
                named += 1
    for path, call in _calls("run_key"):
        field = _literal(call.args[0])
        if field is None:
            continue
        assert field in RUN_FIELDS, (path, ast.unparse(call))
        named += 1
    assert named > 40  # the scan found the readers


def test_the_readers_keys_resolve():
    from moe_unlearn.eval.schema import Key
    from moe_unlearn.report.aggregate import SUMMARY_KEYS
    from moe_unlearn.report.model_card import HEADLINE
    from moe_unlearn.report.render import COLUMNS
    from moe_unlearn.report.tables import TABLES

    getters = [fn for _, fn in COLUMNS] + [fn for n in TABLES.names() for _, fn in TABLES.get(n).columns]
    keys = [g for g in getters if isinstance(g, Key)] + list(SUMMARY_KEYS) + [k for _, ks in HEADLINE for k in ks]
    keys += list(checked_keys())
    assert len(keys) > 60
    for key in keys:
        assert key.path  # raises when the key is not declared
    with pytest.raises(ValueError, match="no declared detail"):
        _ = metric_key("replay", detail="nonsense").path
    with pytest.raises(ValueError, match="no run field"):
        _ = run_key("timing.wall").path
    with pytest.raises(ValueError, match="does not run on split"):
        _ = metric_key("rouge_text", "retain").path


def _metric_paths() -> set[tuple[str, ...]]:
    """The metric paths the declarations generate (run fields are named through run_key)."""
    return {k.path for k in [*metric_keys(), *checked_keys()] if k.metric is not None}


def test_no_module_types_a_key_path_by_hand():
    """A dotted path ("routing.stability.retain") or a get(m, "routing", "stability", ...) chain outside the schema."""
    declared = _metric_paths()
    dotted = {".".join(p) for p in declared}
    found = []
    for path in SRC.rglob("*.py"):
        if path in DECLARING:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if _literal(node) in dotted:
                found.append(f"{path.name}: {node.value!r}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "get":
                parts = tuple(_literal(a) for a in node.args[1:])
                if len(parts) > 1 and None not in parts and any(p[:len(parts)] == parts for p in declared):
                    found.append(f"{path.name}: {ast.unparse(node)}")
    assert not found, found


def test_paths_are_where_the_runner_places_results():
    """Every declared value and detail of every metric, placed by the runner, is read back by its key."""
    for name in METRICS.names():
        m = METRICS.get(name)
        details = {d: f"{name}/{d}" for d in m.detail_keys}
        out: dict = {s: {} for s in SPLITS} | {"per_example": {s: {} for s in SPLITS}}
        res = MetricResult(0.5, [], details)
        if m.scope == "split":
            for split in m.splits:
                place_split(out, m, split, res)
            reads = [(metric_key(name, s), 0.5) for s in m.splits]
            reads += [(metric_key(name, s, d), v) for s in m.splits for d, v in details.items()]
        else:
            place_global(out, m, res)
            reads = [(metric_key(name), 0.5)] + [(metric_key(name, detail=d), v) for d, v in details.items()]
        for key, want in reads:
            assert key.read(out) == want, (name, key.dotted)


def test_arrows_follow_the_declared_direction():
    from moe_unlearn.report.render import COLUMNS
    from moe_unlearn.report.tables import column

    labels = [h for h, _ in COLUMNS]
    assert {"forget NLL ↑", "retain NLL ↓", "forget MC ↓", "retain MC ↑", "stab R ↑", "replay Δacc ↓"} <= set(labels)
    for split in SPLITS:
        for name in ("nll", "mc_acc"):
            up = METRICS.get(name).higher_is_better != (split == "forget")
            assert column("x", metric_key(name, split))[0] == ("x ↑" if up else "x ↓")
    assert column("x", metric_key("lm_eval", detail="tasks.wmdp_bio.acc,none"), forget=True)[0] == "x ↓"
    assert STABILITY["retain"].arrow() == "↑" and run_key("steps").arrow() == ""


def test_both_writers_share_run_fields_and_timing():
    assert set(timing(2.0)) == set(timing(2.0, [0.1, 0.3])) == {"step_seconds_median", "total_seconds"}
    assert timing(2.0, [0.1, 0.3, 0.2])["step_seconds_median"] == pytest.approx(0.2)
    m = run_metrics({"forget": {"nll": 1.0}}, resumed=False, method="ga", adapters=[], steps=3, timing=timing(1.0))
    assert list(m) == ["method", "adapters", "steps", "forget", "resumed", "timing"]
    with pytest.raises(ValueError, match="no run field"):
        run_metrics({}, wall_seconds=1.0)
    for path in (SRC / "train" / "engine.py", SRC / "cli" / "eval.py"):  # both writers build metrics.json here
        names = {getattr(c.func, "id", None) for where, c in _calls("run_metrics") + _calls("timing") if where == path}
        assert names == {"run_metrics", "timing"}, path
