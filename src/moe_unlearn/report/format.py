"""The one way a metric value is read and printed: CLI summaries, the demo's rows, the report
table and the model card (no plotting library: every training process imports this)."""

from __future__ import annotations

from typing import Any


def format_value(x: Any) -> str:
    """None -> 'n/a'; ints as they are; floats with 3 decimals (1 from 100 up); anything else str()."""
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3f}"


def get(m: dict[str, Any], *keys: str) -> Any:
    """m[k1][k2]... or None where any level is missing."""
    for k in keys:
        if not isinstance(m, dict) or k not in m:
            return None
        m = m[k]
    return m
