"""The adapter contract: what an MoE adapter declares, and the hooks the engine calls.

Capabilities: `needs(cfg)` returns the adapter's record (core.needs.Needs) for its settings:
reference, requires_retain_term, retain_forward, capture and capture_grad, selects_trainable,
edits_untrained, lora, conflicts, extra_rows. The engine, the combination checks and the memory
estimate read these records and nothing else, never an adapter's name.

Hooks, in the order the engine calls them (`moe_unlearn.train.engine`):
  check(ctx)                      model-dependent checks before anything heavy (UserError)
  prepare(ctx)                    once, on the ORIGINAL model; ctx.trainable is set by then
                                  unless the adapter selects_trainable
  select_trainable(ctx, params)   only for adapters that declare selects_trainable
  retain_token_weights(ctx, batch, routing)  [B, S] weights for the retain loss, or None
  loss_terms(ctx, forwards)       extra loss terms; forwards: {role: ForwardOut} of the micro-step
  after_step(ctx)                 after every optimizer step (e.g. GRIP's projection)
  after_training(ctx)             once after the last step, before saving (e.g. PTC)
  state_dict() / load_state_dict() for checkpoints and --resume
  summary()                       JSON-able facts for metrics.json["adapter_info"][name]

Estimates without weights (`moe-unlearn memory`, on a meta-device model):
  estimate_trainable(layers)      parameters an adapter that selects_trainable will train
  estimate_bytes(layers)          memory the adapter keeps besides the model (upper bound)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from moe_unlearn.core.needs import Needs
from moe_unlearn.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from moe_unlearn.core.context import ForwardOut, RunContext
    from moe_unlearn.models.layout import MoELayer
    from moe_unlearn.models.routing import RoutingCapture
    from moe_unlearn.models.selectors import ParamRef


class Adapter:
    """Base class: no capabilities and no-op hooks; subclasses declare and override what they need."""

    name: ClassVar[str]
    config_cls: ClassVar[type]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def needs(cls, cfg: Any) -> Needs:
        """The capability record of this adapter with settings cfg (its config_cls)."""
        return Needs()

    # -- hooks -------------------------------------------------------------------------------
    def check(self, ctx: RunContext) -> None:
        """Raise UserError if this adapter cannot run on ctx's model or data."""

    def prepare(self, ctx: RunContext) -> None:
        """Gather what the adapter needs from the original model."""

    def select_trainable(self, ctx: RunContext, params: list[ParamRef]) -> list[ParamRef]:
        return params

    def retain_token_weights(
        self, ctx: RunContext, batch: dict[str, torch.Tensor], routing: RoutingCapture
    ) -> torch.Tensor | None:
        return None

    def loss_terms(self, ctx: RunContext, forwards: dict[str, ForwardOut]) -> dict[str, torch.Tensor]:
        return {}

    def after_step(self, ctx: RunContext) -> None:
        """Runs after each optimizer step."""

    def after_training(self, ctx: RunContext) -> None:
        """Runs once after the last step, before the model is saved."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""

    def summary(self) -> dict[str, Any]:
        return {}

    # -- estimates without weights -------------------------------------------------------
    def estimate_trainable(self, layers: list[MoELayer]) -> int | None:
        return None

    def estimate_bytes(self, layers: list[MoELayer], *, batch_tokens: int | None = None) -> int:
        """Device bytes the adapter keeps through training (train/memory.py); batch_tokens: the
        tokens of one retain batch, for state sized by whole batches (None: unknown)."""
        return 0


ADAPTERS: Registry[type[Adapter]] = Registry("adapter", package="moe_unlearn.adapters")
