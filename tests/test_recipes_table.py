"""docs/recipes.md lists every key of every configs/benchmarks recipe with its value and source.

Each recipe file (every configs/benchmarks/*.yaml not starting with "_", *_finetune.yaml
included) is resolved through `base:` with moe_unlearn.config.resolve_yaml and flattened
to dotted keys (list items of mappings by index: data.eval.forget.0.path). Every flattened key
must have exactly one row in the table with the same value, and every row must name a recipe key
that exists, so a value changed in a YAML file without the table (or the reverse) fails here.

Row format (one per key, in any order):

    | recipe | key | value | source |
    | wmdp_bio_rmu | rmu.alpha | `1600.0` | wmdp@bc5e1ba run_rmu_mixtral.ipynb (--alpha 1600,1600) |

recipe: the file's stem; value: in backticks, the YAML flow form of the resolved value (parsed
back with yaml.safe_load and compared with its type: `1.0e-05`, `[nll, prob]`, `null`, `true`),
`|` written `\\|`; source: the paper section / table or repository file and line, or
`ours: <reason>`.

`python tests/test_recipes_table.py RECIPE...` prints draft rows for recipes (value from the
resolved YAML, source from the YAML comment that sets the key, or TODO).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO / "configs" / "benchmarks"
TABLE = REPO / "docs" / "recipes.md"
RECIPE_FILES = sorted(p for p in RECIPES_DIR.glob("*.yaml") if not p.name.startswith("_"))
HEADER = ("recipe", "key", "value", "source")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def resolve(path: Path) -> dict[str, Any]:
    from moe_unlearn.config import resolve_yaml

    return resolve_yaml(path)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values; mappings recurse, lists recurse by index only when they hold mappings."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: value}


def render(value: Any) -> str:
    """The table's value cell for a resolved value (YAML flow form, pipes escaped)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True, sort_keys=False)
    text = text.strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    elif text.endswith("..."):
        text = text[: -len("...")].strip()
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (True is not 1, 1 is not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def parse_table(text: str) -> tuple[dict[tuple[str, str], tuple[str, str]], list[str]]:
    """{(recipe, key): (value cell, source cell)} of every row under a recipe/key/value/source
    header, and the problems found (malformed or duplicate rows)."""
    rows: dict[tuple[str, str], tuple[str, str]] = {}
    problems: list[str] = []
    in_table = False
    for n, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in _CELL_SPLIT.split(line.strip())[1:-1]]
        if tuple(c.lower() for c in cells) == HEADER:
            in_table = True
            continue
        if not in_table or all(set(c) <= set("-: ") for c in cells):
            continue
        if len(cells) != 4:
            problems.append(f"docs/recipes.md:{n}: {len(cells)} cells, want 4 (escape a '|' in a cell as '\\|')")
            continue
        recipe, key, value, source = cells
        recipe, key = recipe.strip("`"), key.strip("`")
        if (recipe, key) in rows:
            problems.append(f"docs/recipes.md:{n}: a second row for {recipe} {key}")
        rows[(recipe, key)] = (value, source)
    return rows, problems


def cell_value(cell: str) -> Any:
    """The value of a `...` cell (or `` ... `` when the value holds a backtick)."""
    if len(cell) >= 4 and cell.startswith("``") and cell.endswith("``"):
        inner = cell[2:-2].strip()
    elif len(cell) >= 2 and cell.startswith("`") and cell.endswith("`"):
        inner = cell[1:-1]
    else:
        raise ValueError(f"value cell {cell!r} is not in backticks")
    return yaml.safe_load(inner.replace("\\|", "|"))


@pytest.fixture(scope="module")
def table() -> dict[tuple[str, str], tuple[str, str]]:
    rows, problems = parse_table(TABLE.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)
    assert rows, "docs/recipes.md has no recipe/key/value/source table"
    return rows


def mismatches(recipe: str, flat: dict[str, Any], rows: dict[tuple[str, str], tuple[str, str]]) -> list[str]:
    """What the table gets wrong about one recipe's flattened keys (missing, different, stale rows)."""
    out = []
    for key, value in flat.items():
        row = rows.get((recipe, key))
        want = f"| {recipe} | {key} | {render(value)} | <source> |"
        if row is None:
            out.append(f"missing row: {want}")
            continue
        try:
            got = cell_value(row[0])
        except (ValueError, yaml.YAMLError) as e:
            out.append(f"{recipe} {key}: unreadable value cell ({e}); want {want}")
            continue
        if not same(got, value):
            out.append(f"{recipe} {key}: the table says {row[0]}, the recipe resolves to {render(value)}")
    out += [f"stale row: {r} {k} (no such key in the recipe)" for (r, k) in rows if r == recipe and k not in flat]
    return out


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_every_key_of_the_recipe_is_in_the_table_with_its_value(path: Path, table):
    problems = mismatches(path.stem, flatten(resolve(path)), table)
    assert not problems, f"docs/recipes.md is out of step with {path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_every_row_names_a_source(path: Path, table):
    bad = [f"{k}: {s!r}" for (r, k), (_, s) in table.items() if r == path.stem
           and (not s or s.upper().startswith("TODO") or (s.lower().startswith("ours") and not re.match(r"ours: \S", s)))]
    assert not bad, "rows without a source (write the citation, or 'ours: <reason>'):\n" + "\n".join(bad)


def test_the_table_names_only_recipes_that_exist(table):
    known = {p.stem for p in RECIPE_FILES}
    assert not sorted({r for r, _ in table} - known)


def test_a_changed_value_is_caught(table):
    """The check itself: one value changed in a resolved recipe, one key added, one removed."""
    path = RECIPES_DIR / "wmdp_bio_rmu.yaml"
    flat = flatten(resolve(path))
    assert not mismatches(path.stem, flat, table)
    changed = dict(flat, **{"rmu.alpha": flat["rmu.alpha"] * 2})
    assert any("rmu.alpha: the table says" in m for m in mismatches(path.stem, changed, table))
    assert any("missing row" in m for m in mismatches(path.stem, dict(flat, **{"train.new_key": 1}), table))
    assert any("stale row" in m for m in mismatches(path.stem, {k: v for k, v in flat.items() if k != "seed"}, table))
    assert not same(1, 1.0) and not same(True, 1) and same([1.0e-5, None], [1.0e-5, None])


# ---- draft rows: python tests/test_recipes_table.py RECIPE... ----

def yaml_comments(path: Path) -> dict[str, str]:
    """Dotted key (list items by index) -> the comment that documents it in one YAML file: the
    line's own comment, else the comment lines right above it, else its parent's."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, path)
    counters: dict[str, int] = {}
    above: list[str] = []
    block_indent: int | None = None  # inside a folded / literal block scalar
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue
            block_indent = None
        if not stripped:
            above = []
            continue
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        parts = re.split(r"\s+#\s?", stripped, maxsplit=1)
        body, comment = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        if body.startswith("- "):
            index = counters.get(parent, 0)
            counters[parent] = index + 1
            key_path = f"{parent}.{index}" if parent else str(index)
            item_indent = indent + 1
        else:
            key = body.split(":", 1)[0].strip()
            key_path = f"{parent}.{key}" if parent else key
            item_indent = indent
            value = body.split(":", 1)[1].strip() if ":" in body else ""
            if value in (">", ">-", "|", "|-", ">+", "|+"):
                block_indent = indent
        doc = comment or " ".join(above)
        if doc:
            out[key_path] = doc
        elif parent in out:
            out[key_path] = out[parent]
        stack.append((item_indent, key_path))
        above = []
    return out


def draft_rows(path: Path) -> list[str]:
    from moe_unlearn.config import resolve_yaml

    files: list[str] = []
    resolve_yaml(path, files=files)
    chain = [Path(f) for f in files]  # the recipe first, then its bases: the first file that sets a key wins
    comments = [(f, yaml_comments(f)) for f in chain]
    raws = [(f, flatten(yaml.safe_load(f.read_text(encoding="utf-8")) or {})) for f in chain]
    rows = []
    for key, value in flatten(resolve(path)).items():
        source = "TODO"
        for (f, raw), (_, docs) in zip(raws, comments):
            setter = next((k for k in raw if k == key or key.startswith(k + ".")), None)
            if setter is not None:
                doc = next((docs[p] for p in _prefixes(key) if p in docs), None)
                source = f"{doc} ({f.name})" if doc else f"TODO ({f.name})"
                break
        rows.append(f"| {path.stem} | {key} | {render(value)} | {source.replace('|', chr(92) + '|')} |")
    return rows


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print("\n".join(draft_rows(RECIPES_DIR / f"{Path(name).stem}.yaml")))
