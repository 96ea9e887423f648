"""The layering docs/design.md promises: no import cycle between files, and no module importing a
layer above its own (type hints included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.import_graph import LAYERS, cycles, import_graph, layer_of, module_files, upward_imports

SRC = Path(__file__).resolve().parents[2] / "src"


def test_runtime_import_graph_has_no_cycle():
    assert cycles(import_graph(SRC)) == []


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph(SRC, type_checking=True)) == []


def test_every_package_has_a_layer():
    assert all(layer_of(m) in LAYERS.values() for m in module_files(SRC))


def test_design_doc_draws_the_layers_the_test_enforces():
    """docs/design.md's layer picture ("7  cli" ... "0  errors ...") names each package at the
    layer LAYERS gives it, and every package LAYERS knows."""
    text = (SRC.parent / "docs" / "design.md").read_text()
    drawn = {}
    for line in text.split("## Layers", 1)[1].split("```")[1].splitlines():
        words = line.split("(", 1)[0].split()  # "(calls eval ...)" is a remark, not a package
        if words and words[0].isdigit():
            drawn.update({name: int(words[0]) for name in words[1:]})
    assert drawn == {name: layer for name, layer in LAYERS.items() if name}


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder_finds_cycles(graph, expected):
    assert cycles(graph) == expected


def test_graph_reader_sees_function_level_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "moe_unlearn"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "config.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from moe_unlearn.train import engine\n"
        "def f():\n    from moe_unlearn.benchmark.cache import x\n")
    (pkg / "benchmark").mkdir()
    (pkg / "benchmark" / "__init__.py").write_text("")
    (pkg / "benchmark" / "cache.py").write_text("from moe_unlearn.data import config\nfrom . import x\n")
    (pkg / "train").mkdir()
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "engine.py").write_text("")
    graph = import_graph(tmp_path)
    assert graph["moe_unlearn.data.config"] == {"moe_unlearn.benchmark.cache"}
    assert graph["moe_unlearn.benchmark.cache"] == {"moe_unlearn.data.config", "moe_unlearn.benchmark"}
    assert cycles(graph) == [["moe_unlearn.benchmark.cache", "moe_unlearn.data.config"]]
    assert upward_imports(graph) == [("moe_unlearn.data.config", "moe_unlearn.benchmark.cache")]
    typed = import_graph(tmp_path, type_checking=True)
    assert "moe_unlearn.train.engine" in typed["moe_unlearn.data.config"]


def test_a_training_process_never_imports_the_plotting_library():
    """The engine reads metric values and writes the model card through report.format and
    report.model_card; matplotlib is for `report` alone (seconds of start-up per process)."""
    import subprocess
    import sys

    code = "import sys, moe_unlearn.train.engine, moe_unlearn.cli.unlearn; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_no_adapter_imports_another():
    """Adapters share base.py and helper modules; one adapter reaches another only through the
    registry (GRIP's deprecated consistency alias runs keep_routing that way)."""
    from moe_unlearn.adapters import ADAPTERS

    entries = {f"moe_unlearn.adapters.{name}" for name in ADAPTERS.names()}
    graph = import_graph(SRC, type_checking=True)
    assert len(entries) >= 4 and entries <= set(graph)
    assert sorted((a, b) for a in entries for b in graph[a] if b in entries) == []
