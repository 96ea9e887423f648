"""What each distributed engine refuses before accelerate's prepare, with one line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from moe_unlearn.core.trainable import Slice, Trainable
from moe_unlearn.errors import UserError
from moe_unlearn.train.engine import check_engine


def _accelerator(kind: DistributedType, *, fsdp_version: int = 2, zero_stage: int = 3) -> SimpleNamespace:
    state = SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=fsdp_version),
                            deepspeed_plugin=SimpleNamespace(zero_stage=zero_stage))
    return SimpleNamespace(distributed_type=kind, state=state)


def _trainable(slices: bool) -> Trainable:
    fused = torch.nn.Parameter(torch.zeros(4, 3))
    return Trainable({}, [Slice("experts.w", fused, 1, fused.detach()[1].clone())] if slices else [])


@pytest.mark.parametrize("kind", [DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.FSDP])
def test_ddp_and_fsdp2_run_slices_and_references(kind):
    check_engine(_accelerator(kind), _trainable(slices=True), reference=True)


def test_fsdp1_is_refused():
    with pytest.raises(UserError, match="FSDP version 2"):
        check_engine(_accelerator(DistributedType.FSDP, fsdp_version=1), _trainable(slices=False), reference=False)


def test_zero3_runs_slices_and_refuses_references():
    zero3 = _accelerator(DistributedType.DEEPSPEED)
    check_engine(zero3, _trainable(slices=True), reference=False)
    with pytest.raises(UserError, match="reference.*DeepSpeed ZeRO-3"):
        check_engine(zero3, _trainable(slices=True), reference=True)
    check_engine(zero3, _trainable(slices=False), reference=False)


def test_deepspeed_below_stage_3_is_refused():
    with pytest.raises(UserError, match="ZeRO stage 3"):
        check_engine(_accelerator(DistributedType.DEEPSPEED, zero_stage=2), _trainable(slices=False), reference=False)
