"""The retain guard: never end a run below a floor of the retain split's MC accuracy.

Stopping on "forgotten" alone lets a method that damages retained knowledge on its way to the
oracle's forget NLL (GA's answer-token push reaches the retain answers too) publish a model that
has lost it. With `train.early_stop.retain_kept: f`, each periodic eval compares retain MC with
f x its value at step 0; the first eval below that floor restores the trained values of the last
eval that was above it and ends training there. The cost is one host copy of the trained values
(T x b bytes of CPU memory), refreshed at each eval that keeps the floor.
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
    kept_step: int | None = None  # step of the snapshot
    snapshot: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def floor(self) -> float | None:
        return None if self.start is None else self.fraction * self.start

    def check(self, step: int, retain: dict[str, Any], trainable: Trainable) -> dict[str, Any] | None:
        """At a periodic eval: None while retain MC keeps the floor (the snapshot moves here);
        once it falls below, the trained values go back to the snapshot and the record of the
        stop is returned."""
        mc = retain.get("mc_acc")
        if not isinstance(mc, (int, float)):
            return None  # no retain MC evaluated: nothing to guard
        if self.start is None:
            self.start = float(mc)
        if mc >= self.floor:
            self.kept_step = step
            self.snapshot = {k: v.detach().to("cpu", copy=True) for k, v in trainable.state_tensors().items()}
            return None
        record = {"reason": "retain_guard", "retain_mc_acc": float(mc), "floor": self.floor, "restored_step": None}
        if self.snapshot:
            device = next(iter(trainable.state_tensors().values())).device
            trainable.load_state_tensors({k: v.to(device) for k, v in self.snapshot.items()})
            record["restored_step"] = self.kept_step
        return record

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the floor's reference (the snapshot is not kept: after a resume
        the first eval takes a new one)."""
        return {"start": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = state.get("start")
