"""The words every layer shares: the data splits, the roles of a forward, a batch.

On the lowest floor, so data, core, methods, adapters and eval spell them once; torch is
imported for type checking only (the CLI's --help stays free of it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

# forget: what the run unlearns; retain: what it keeps; holdout: unseen examples of the forget
# distribution (the forgetting target when no retrained model is given)
SPLITS: tuple[str, ...] = ("forget", "retain", "holdout")

# forget / retain: training forwards (recorded for adapters); reference: the original model's
# values swapped in (never recorded, never captured)
Role = Literal["forget", "retain", "reference"]
TRAINING_ROLES: tuple[Role, ...] = ("forget", "retain")

# a collated batch: input_ids / attention_mask / labels [B, S], index [B]
Batch = dict[str, "Tensor"]

__all__ = ["SPLITS", "Role", "TRAINING_ROLES", "Batch"]
