"""scripts/transfer.py's table cells: a signed mean (the gap to the oracle) keeps its sign, its spread has none."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "transfer.py"


def load():
    spec = importlib.util.spec_from_file_location("transfer_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mean_and_spread_cells():
    ms = load()._ms
    assert ms([0.01, 0.03], "{:+.3f}") == "+0.020 ± 0.014"
    assert ms([-0.05, -0.01], "{:+.3f}") == "-0.030 ± 0.028"
    assert ms([0.25, 0.27]) == "0.260 ± 0.014" and ms([]) == "n/a" and ms([42.0], "{:.0f}") == "42 ± 0"
