"""The lifecycle hooks an MoE adapter implements; the engine calls these and nothing else.

Order in a run (engine, `moe_unlearn.train.engine`):
  check(ctx)                      before anything heavy: raise UserError on a bad combination
  prepare(ctx)                    once, on the ORIGINAL model, before training
  select_trainable(ctx, params)   narrow or replace the trainable parameter list
  capture_roles()                 forward roles ("forget", "retain") whose routing the adapter
                                  needs during training (with gradients when capture_grad)
  retain_token_weights(ctx, batch, routing)  [B, S] weights for the retain loss, or None
  loss_terms(ctx, forwards)       extra loss terms added to the method's loss
  after_step(ctx)                 after every optimizer step (e.g. GRIP's projection)
  after_training(ctx)             once after the last step, before saving (e.g. PTC)
  state_dict() / load_state_dict() for checkpoints and --resume
  summary()                       JSON-able facts for metrics.json["adapter_info"][name]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from moe_unlearn.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from moe_unlearn.models.routing import RoutingCapture
    from moe_unlearn.models.selectors import ParamRef
    from moe_unlearn.train.context import ForwardOut, RunContext


class Adapter:
    """Base class with no-op hooks; subclasses override what they need."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    # adapters this one cannot be combined with (checked in both directions)
    conflicts: ClassVar[frozenset[str]] = frozenset()
    # whether the captured router logits/weights keep their autograd graph (loss terms on them);
    # an adapter that only reads the selections sets False and saves the backward bookkeeping
    capture_grad: ClassVar[bool] = True

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def check(self, ctx: RunContext) -> None:
        """Raise UserError if this adapter cannot run with ctx's method or model."""

    def prepare(self, ctx: RunContext) -> None:
        """Gather what the adapter needs from the original model."""

    def select_trainable(self, ctx: RunContext, params: list[ParamRef]) -> list[ParamRef]:
        return params

    def capture_roles(self) -> frozenset[str]:
        return frozenset()

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


ADAPTERS: Registry[type[Adapter]] = Registry("adapter")
