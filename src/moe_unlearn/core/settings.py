"""RunSettings: the part of a run's configuration that core/, methods and adapters read.

The engine builds it from the whole config (`train.config.run_settings`); below the train
layer nothing reads the config itself, so each of these dependencies is a typed import that
the layer test and a type checker see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RunSettings:
    seed: int  # seed: methods' and adapters' own random draws start from it
    batch_size: int  # data.batch_size: examples per process of a statistics pass (ctx.iter_split)
    loss_chunk: int  # train.loss_chunk: vocabulary rows at once (0: full logits)
    precision: Literal["fp32", "bf16", "fp16"]  # train.precision: the autocast of every forward
    grad_accum: int  # train.grad_accum: micro-steps per optimizer step
    load_balancing_coef: float  # train.load_balancing_coef: > 0 asks forwards for the router logits
