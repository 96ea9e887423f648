"""Evaluation: metrics (one function each, registry METRICS) and the runner.

Importing this package registers every metric module.
"""

from moe_unlearn.eval import generation, harness, knowledge, privacy, reference, relearn, routing, tofu  # noqa: F401
from moe_unlearn.eval.config import EvalConfig, LmEvalConfig, RelearnConfig
from moe_unlearn.eval.context import EvalCache, EvalContext, model_fingerprint
from moe_unlearn.eval.metric import METRICS, Metric, MetricResult
from moe_unlearn.eval.runner import capture_eval_routing, evaluate_model

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
    "evaluate_model",
    "model_fingerprint",
]
