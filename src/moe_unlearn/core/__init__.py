"""The contract layer under methods, adapters and eval: the run context, forward results,
role names, the trained parameter set and the shared losses."""

from moe_unlearn.core.context import TRAINING_ROLES, ForwardOut, ForwardSpec, Role, RunContext
from moe_unlearn.core.trainable import Trainable

__all__ = ["TRAINING_ROLES", "ForwardOut", "ForwardSpec", "Role", "RunContext", "Trainable"]
