"""Reports over finished runs: a results table and figures in report.md / report.html."""

from moe_unlearn.report.render import write_report
from moe_unlearn.report.runs import Run, load_runs

__all__ = ["Run", "load_runs", "write_report"]
