"""The unlearning engine: config, run context, trainable parameters, the loop, checkpoints."""

from moe_unlearn.train.config import UnlearnConfig, build_config, load_config
from moe_unlearn.train.context import ForwardOut, RunContext
from moe_unlearn.train.engine import run_unlearning

__all__ = ["UnlearnConfig", "build_config", "load_config", "ForwardOut", "RunContext", "run_unlearning"]
