"""The contract layer under methods, adapters and eval: the run context, forward results,
role names, the trained parameter set and the shared losses."""

from moe_unlearn.core.context import ForwardOut, ForwardSpec, RunContext
from moe_unlearn.core.needs import Needs, RunNeeds
from moe_unlearn.core.settings import RunSettings
from moe_unlearn.core.trainable import Trainable
from moe_unlearn.vocab import TRAINING_ROLES, Role

__all__ = ["TRAINING_ROLES", "ForwardOut", "ForwardSpec", "Needs", "Role", "RunContext", "RunNeeds", "RunSettings",
           "Trainable"]
