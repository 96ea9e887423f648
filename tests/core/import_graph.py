"""The package's runtime import graph between files, read with `ast` (nothing is imported).

Edges: every `import a.b` / `from a.b import c` of a moe_unlearn module, at module level or
inside functions; imports under `if TYPE_CHECKING:` only when asked (`type_checking=True`). `from pkg import name` points at the
submodule pkg/name.py when there is one, else at pkg/__init__.py. Importing a submodule does
not add an edge to its package's __init__ (as in import-linter and pydeps).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "moe_unlearn"


def module_files(src: Path) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package under src."""
    out = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, here: str, is_pkg: bool, type_checking: bool) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement (TYPE_CHECKING blocks when asked)."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".") if is_pkg else here.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(src: Path, *, type_checking: bool = False) -> dict[str, set[str]]:
    """{module: modules of this package it imports} (at run time; also for type hints when asked)."""
    files = module_files(src)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        for module, names in _imports(tree, name, path.name == "__init__.py", type_checking):
            if module != PACKAGE and not module.startswith(PACKAGE + "."):
                continue
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in files]
            edges.update(subs)
            if len(subs) < len(names) or not names:
                target = module
                while target and target not in files:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target:
                    edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


# The layer picture of docs/design.md: a module may import its own layer's modules and lower layers only.
LAYERS: dict[str, int] = {
    "errors": 0, "registry": 0, "config": 0, "paths": 0, "leftovers": 0, "hub": 0, "vocab": 0, "": 0,
    "models": 1, "data": 1,
    "core": 2,
    "methods": 3, "adapters": 3, "eval": 3,
    "benchmark": 4, "report": 4,
    "train": 5,
    "recipes": 6, "preflight": 6,
    "cli": 7,
}


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    return LAYERS[key]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs that point to a higher layer."""
    return sorted((a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
