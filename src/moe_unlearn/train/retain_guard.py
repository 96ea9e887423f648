"""The retain guard: never end a run below a floor of the retain split's MC accuracy.

Stopping on "forgotten" alone lets a method that damages retained knowledge on its way to the
oracle's forget NLL (GA's push on answer tokens reaches the retain answers too) publish a model
that has lost it. With `train.early_stop.retain_kept: f`, each periodic eval compares retain MC
with f x its value at step 0 and keeps a host copy of the trained values of the last eval at or
above that floor. Training goes on through dips (keep_routing's runs often dip and recover);
when it ends (forgotten, or the budget spent) below the floor, the trained values go back to
that copy. The cost is the copy: T x b bytes of CPU memory, refreshed at each eval that keeps
the floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from moe_unlearn.core.trainable import Trainable


@dataclass
class RetainGuard:
    fraction: float  # the floor: fraction x retain MC at the first eval (step 0)
    start: float | None = None  # retain MC at the first eval
    last: tuple[int, float] | None = None  # (step, retain MC) of the latest eval
    kept_step: int | None = None  # step of the host copy
    snapshot: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def floor(self) -> float | None:
        return None if self.start is None else self.fraction * self.start

    def observe(self, step: int, retain: dict[str, Any], trainable: Trainable) -> None:
        """At a periodic eval: the copy moves here while retain MC keeps the floor."""
        mc = retain.get("mc_acc")
        if not isinstance(mc, (int, float)):
            return  # no retain MC evaluated: nothing to guard
        if self.start is None:
            self.start = float(mc)
        self.last = (step, float(mc))
        if mc >= self.floor:
            self.kept_step = step
            self.snapshot = {k: v.detach().to("cpu", copy=True) for k, v in trainable.state_tensors().items()}

    def finish(self, trainable: Trainable) -> dict[str, Any] | None:
        """When training ends: below the floor, restore the copy (when there is one). Returns the
        guard's record for metrics.json (None when nothing was guarded)."""
        if self.last is None or self.floor is None:
            return None
        step, mc = self.last
        record: dict[str, Any] = {"floor": self.floor, "final_step": step, "retain_mc_acc": mc, "restored_step": None}
        if mc < self.floor and self.snapshot:
            trainable.load_state_tensors(self.snapshot)  # copy_ into the trained values, on their device
            record["restored_step"] = self.kept_step
        return record

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the floor's reference (not the copy: after a resume the next
        eval that keeps the floor takes a new one)."""
        return {"start": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = state.get("start")
