"""Reports over finished runs: a results table and figures in report.md / report.html.

`write_report` is imported on first use: the figures need matplotlib, which a training process
(that imports report.model_card and report.format) never loads.
"""

from typing import Any

from moe_unlearn.report.runs import Run, load_runs

__all__ = ["Run", "load_runs", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from moe_unlearn.report.render import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
