"""The unlearning engine: config, the loop, checkpoints (the run context lives in core/)."""

from moe_unlearn.train.config import UnlearnConfig, build_config, load_config
from moe_unlearn.train.engine import Trainer, run_unlearning

__all__ = ["UnlearnConfig", "Trainer", "build_config", "load_config", "run_unlearning"]
