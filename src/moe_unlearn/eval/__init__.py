"""Evaluation: metrics (one function each, one module per family; `METRICS` finds them on
first use) and the runner."""

from moe_unlearn.eval.config import EvalConfig, LmEvalConfig, RelearnConfig
from moe_unlearn.eval.context import EvalCache, EvalContext, model_fingerprint
from moe_unlearn.eval.metric import METRICS, Metric, MetricResult
from moe_unlearn.eval.runner import capture_eval_routing, check_processes, evaluate_model

__all__ = [
    "METRICS",
    "EvalCache",
    "EvalConfig",
    "EvalContext",
    "LmEvalConfig",
    "Metric",
    "MetricResult",
    "RelearnConfig",
    "capture_eval_routing",
    "check_processes",
    "evaluate_model",
    "model_fingerprint",
]
