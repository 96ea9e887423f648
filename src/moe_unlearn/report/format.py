"""The one way a metric value is printed: CLI summaries, the demo's rows and the report table."""

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
