"""Config loading: overrides, validation, suggestions."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from moe_unlearn.config import apply_overrides, build, load_yaml, require, to_dict
from moe_unlearn.errors import UserError


@dataclass
class Inner:
    lr: float = 1e-4
    steps: int = 10

    def validate(self, where: str) -> None:
        require(self.lr > 0, f"'{where}.lr' must be > 0, got {self.lr}")


@dataclass
class Outer:
    name: str
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    limit: int | None = None


def test_overrides_are_parsed_as_yaml_and_do_not_touch_input():
    cfg = {"inner": {"lr": 1}}
    out = apply_overrides(cfg, ["inner.lr=2e-3", "inner.steps=5", "tags=[x, y]", "name=run"])
    assert cfg == {"inner": {"lr": 1}}
    obj = build(Outer, out)
    assert obj.inner.lr == pytest.approx(2e-3) and obj.inner.steps == 5
    assert obj.tags == ["x", "y"] and obj.name == "run"


def test_unknown_key_gets_suggestion():
    with pytest.raises(UserError, match=r"unknown config key 'inner.stpes' \(did you mean 'steps'\?\)"):
        build(Outer, {"name": "x", "inner": {"stpes": 3}})


def test_type_and_literal_and_required_errors():
    with pytest.raises(UserError, match="'inner.steps' must be an integer"):
        build(Outer, {"name": "x", "inner": {"steps": "many"}})
    with pytest.raises(UserError, match="'mode' must be one of a, b"):
        build(Outer, {"name": "x", "mode": "c"})
    with pytest.raises(UserError, match="missing required config key 'name'"):
        build(Outer, {})
    with pytest.raises(UserError, match="'inner.lr' must be > 0"):
        build(Outer, {"name": "x", "inner": {"lr": -1}})


def test_optional_accepts_none_and_value():
    assert build(Outer, {"name": "x", "limit": None}).limit is None
    assert build(Outer, {"name": "x", "limit": 3}).limit == 3
    assert to_dict(build(Outer, {"name": "x"}))["inner"] == {"lr": 1e-4, "steps": 10}


def test_bad_override_and_yaml(tmp_path):
    with pytest.raises(UserError, match="must look like"):
        apply_overrides({}, ["novalue"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(UserError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("a: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(unsafe)
