"""What each distributed engine refuses before accelerate's prepare, with one line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from moe_unlearn.errors import UserError
from moe_unlearn.train.accel import check_engine


def _accelerator(kind: DistributedType, *, fsdp_version: int = 2, zero_stage: int = 3) -> SimpleNamespace:
    state = SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=fsdp_version),
                            deepspeed_plugin=SimpleNamespace(zero_stage=zero_stage))
    return SimpleNamespace(distributed_type=kind, state=state)


@pytest.mark.parametrize("kind", [DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.FSDP,
                                  DistributedType.DEEPSPEED])
def test_one_process_ddp_fsdp2_and_zero3_run(kind):
    check_engine(_accelerator(kind))


def test_fsdp1_is_refused():
    with pytest.raises(UserError, match="FSDP version 2"):
        check_engine(_accelerator(DistributedType.FSDP, fsdp_version=1))


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_deepspeed_below_stage_3_is_refused(stage):
    with pytest.raises(UserError, match="ZeRO stage 3"):
        check_engine(_accelerator(DistributedType.DEEPSPEED, zero_stage=stage))
