"""EvalConfig validation: typos and impossible values are one-line UserErrors."""

import pytest

from moe_unlearn.config import build
from moe_unlearn.errors import UserError
from moe_unlearn.eval import METRICS, EvalConfig
from moe_unlearn.eval.config import DEFAULT_METRICS


def test_defaults_are_valid_registered_metrics():
    cfg = build(EvalConfig, {}, "eval")
    assert cfg.metrics == DEFAULT_METRICS and set(cfg.metrics) <= set(METRICS.names())
    assert (cfg.max_new_tokens_qa, cfg.max_new_tokens_text, cfg.mink_k, cfg.retrained_auc) == (32, 128, 0.4, 0.5)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"metrics": ["stabilty"]}, "did you mean 'stability'"),
        ({"metrics": ["nll", "nll"]}, "lists a metric twice"),
        ({"mink_k": 0}, "eval.mink_k"),
        ({"retrained_auc": 1.0}, "eval.retrained_auc"),
        ({"max_examples": 0}, "eval.max_examples"),
        ({"relearn": {"fraction": 1.5}}, "eval.relearn.fraction"),
        ({"metrics": ["lm_eval"]}, "eval.lm_eval.tasks"),
        ({"batchsize": 4}, "did you mean 'batch_size'"),
    ],
)
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(UserError, match=message):
        build(EvalConfig, raw, "eval")
