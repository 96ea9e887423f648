"""The adapter contract: what an MoE adapter declares, and the hooks the engine calls.

Capabilities (declarations; the engine and config validation read these and nothing else, never
an adapter's name):
  needs_reference        the adapter calls ctx.reference() (original trained values) in training
  selects_trainable      select_trainable() chooses what trains (SEUF); such an adapter is
                         prepared BEFORE the trained set is built, every other one after it
  needs_retain_term      the method must have a retain term (TRACE reweights it)
  needs_retain_forward   a retain forward must run every micro-step; the engine runs one when
                         the method does not (so the adapter works with plain GA)
  capture_roles()        training roles whose routing the adapter reads in loss_terms /
                         retain_token_weights
  capture_grad           the captured router logits keep their autograd graph (a loss on them)
  supports_lora          the adapter works on peft LoRA deltas
  conflicts              adapter names it cannot be combined with (checked both ways)
  edits_untrained()      a reason string when the adapter changes parameters outside the
                         trained set (GRIP's router refit), else None; refused next to an adapter
                         that selects_trainable, whose guarantee is that nothing else changes

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
  extra_rows()                    examples it forwards per micro-step besides the method's batches
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from moe_unlearn.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from moe_unlearn.core.context import ForwardOut, Role, RunContext
    from moe_unlearn.models.layout import MoELayer
    from moe_unlearn.models.routing import RoutingCapture
    from moe_unlearn.models.selectors import ParamRef


class Adapter:
    """Base class: no capabilities and no-op hooks; subclasses declare and override what they need."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    needs_reference: ClassVar[bool] = False
    selects_trainable: ClassVar[bool] = False
    needs_retain_term: ClassVar[bool] = False
    supports_lora: ClassVar[bool] = True
    capture_grad: ClassVar[bool] = True
    conflicts: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # -- capabilities that depend on the adapter's settings ---------------------------------
    @property
    def needs_retain_forward(self) -> bool:
        return False

    def capture_roles(self) -> frozenset[Role]:
        return frozenset()

    def edits_untrained(self) -> str | None:
        return None

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

    def estimate_bytes(self, layers: list[MoELayer]) -> int:
        return 0

    def extra_rows(self) -> int:
        return 0


ADAPTERS: Registry[type[Adapter]] = Registry("adapter", package="moe_unlearn.adapters")
