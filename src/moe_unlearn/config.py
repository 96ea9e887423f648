"""YAML configs with dotted `key=value` overrides, validated against dataclasses.

Unknown keys are rejected with a suggestion, values are type-checked, and every error is a
UserError naming the dotted key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from moe_unlearn.errors import UserError, first_line
from moe_unlearn.paths import regular_file
from moe_unlearn.registry import suggest

T = TypeVar("T")
ALIAS_BUDGET = 10_000  # nodes that aliases may add; an "alias bomb" of a few kB adds billions
INT_LIMIT = 2**63  # every integer must fit int64 (torch, numpy and the OS take no more)
FLOAT_LIMIT = 3.4028234663852886e38  # every number must fit float32: the tensors it meets


class StrictYAMLError(yaml.YAMLError):
    """YAML that parses but is refused: a key given twice, or aliases beyond the budget."""


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no tags that run code) that also refuses duplicate keys and alias bombs."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        added = _expanded_size(node, {}) - _unique_size(node, set())
        if added > ALIAS_BUDGET:
            raise StrictYAMLError(f"aliases expand to over {ALIAS_BUDGET} extra values (an alias bomb?); "
                                  "write the values out instead")
        return node

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise StrictYAMLError(f"key '{key}' is given twice (lines {seen[key]} and {line}); keep one")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int | None]) -> int:
    """Values the node stands for once every alias is copied out (a cycle is refused)."""
    key = id(node)
    if key in memo:
        if memo[key] is None:
            raise StrictYAMLError("an alias refers to the value that contains it (a cycle)")
        return memo[key]  # type: ignore[return-value]
    memo[key] = None
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def _unique_size(node: yaml.Node, seen: set[int]) -> int:
    if id(node) in seen:
        return 0
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        return 1 + sum(_unique_size(child, seen) for child in node.value)
    if isinstance(node, yaml.MappingNode):
        return 1 + sum(_unique_size(k, seen) + _unique_size(v, seen) for k, v in node.value)
    return 1


def parse_yaml(text: str) -> Any:
    """Parse YAML with StrictLoader; raises yaml.YAMLError (StrictYAMLError for refusals)."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise StrictYAMLError("nested too deeply") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer of 5000 digits, a date 2001-13-45
        raise StrictYAMLError(f"a value cannot be read ({str(e).split(':')[0]})") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping: safe tags only, no duplicate keys, no alias bombs."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"config file not found: {p}")
    regular_file(p, "config file")  # a FIFO or device would block the read
    try:
        data = parse_yaml(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"config file {p} is not valid YAML: {first_line(e, type(e).__name__)}") from None
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
            value = parse_yaml(raw) if raw != "" else ""
        except StrictYAMLError as e:
            raise UserError(f"override '{key}': {' '.join(str(e).split())}") from None
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


def merge_config(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in `top` replaces `base`."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def resolve_yaml(path: str | Path, _seen: tuple[Path, ...] = (), files: list[str] | None = None) -> dict[str, Any]:
    """Read a config and the `base:` files it extends (paths relative to it), merged; each file
    read is appended to `files`."""
    p = Path(path).resolve()
    if p in _seen:
        raise UserError(f"config {p} extends itself through 'base:' (cycle)")
    raw = load_yaml(p)
    if files is not None:
        files.append(str(p))
    bases = raw.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"'base' in {p} must be a path or a list of paths")
    merged: dict[str, Any] = {}
    for b in bases:
        merged = merge_config(merged, resolve_yaml(p.parent / b, (*_seen, p), files))
    return merge_config(merged, raw)


def read_config(path: str | Path, overrides: list[str], files: list[str] | None = None) -> dict[str, Any]:
    """A config file with its `base:` files merged and the overrides applied, unvalidated.

    Needs neither torch nor the registries, so a command can refuse a missing or broken file, or
    a malformed override, before its heavy imports."""
    return apply_overrides(resolve_yaml(path, files=files), overrides)


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
        raise UserError(errors[0] if errors else f"'{dotted}' has an invalid value {_short(value)}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise UserError(f"'{dotted}' must be one of {choices}, got {_short(value)}{suggest(str(value), [str(a) for a in args])}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, dotted)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise UserError(f"'{dotted}' must be a list, got {_short(value)}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{dotted}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"'{dotted}' must be a mapping, got {_short(value)}")
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(inner, v, f"{dotted}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"'{dotted}' must be true or false, got {_short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT_LIMIT <= value < INT_LIMIT:
                raise UserError(f"'{dotted}' is out of range: integers must lie within ±2**63, got {_short(value)}")
            return value
        raise UserError(f"'{dotted}' must be an integer, got {_short(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise UserError(f"'{dotted}' must be a number, got {_short(value)}")
        try:
            number = float(number)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise UserError(f"'{dotted}' must be a finite number, got {_short(value)}")
        if abs(number) > FLOAT_LIMIT:
            raise UserError(f"'{dotted}' is out of range: numbers must lie within float32's ±3.4e38, got {_short(value)}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            text = str(value)
            if "\x00" in text:
                raise UserError(f"'{dotted}' contains a NUL character")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise UserError(f"'{dotted}' holds invalid Unicode ({text[e.start]!r} at character {e.start})") from None
            return text
        raise UserError(f"'{dotted}' must be a string, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    """repr(value), cut to one readable line (values from files can be huge)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 80 else text[:77] + "..."


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
