"""YAML configs with dotted `key=value` overrides, validated against dataclasses.

Unknown keys are rejected with a suggestion, values are type-checked, and every error is a
UserError naming the dotted key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from moe_unlearn.errors import UserError
from moe_unlearn.registry import suggest

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with yaml.safe_load (never executes tags)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"config file {p} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping at the top level")
    return data


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of cfg with each 'a.b.c=value' applied (value parsed as YAML)."""
    out = _deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like key.subkey=value")
        key, raw = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise UserError(f"override '{item}' has an empty key part")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def build(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Instantiate dataclass cls from a mapping, recursing into nested dataclasses.

    Raises UserError for unknown keys (with a suggestion), missing required keys and values of
    the wrong type, naming the dotted key.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UserError(f"'{where or 'config'}' must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise UserError(f"unknown config key '{dotted}'{suggest(str(key), list(fields))}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            dotted = f"{where}.{name}" if where else name
            raise UserError(f"missing required config key '{dotted}'")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(where)
    return obj


def _coerce(tp: Any, value: Any, dotted: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, dotted)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"'{dotted}' has an invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise UserError(f"'{dotted}' must be one of {choices}, got {value!r}{suggest(str(value), [str(a) for a in args])}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, dotted)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise UserError(f"'{dotted}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{dotted}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"'{dotted}' must be a mapping, got {value!r}")
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(inner, v, f"{dotted}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"'{dotted}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"'{dotted}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"'{dotted}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"'{dotted}' must be a string, got {value!r}")
    return value


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict for config.yaml."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def require(cond: bool, message: str) -> None:
    """Raise UserError(message) unless cond: for config `validate` methods."""
    if not cond:
        raise UserError(message)
