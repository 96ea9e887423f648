"""The shipped accelerate configs parse with accelerate's own loader and open with their launch line."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
EXPECTED = {
    "cpu_2proc": DistributedType.MULTI_GPU,  # torch.distributed's launcher; gloo on a CPU-only machine
    "single_gpu": DistributedType.NO,
    "multi_gpu_ddp": DistributedType.MULTI_GPU,
    "fsdp2": DistributedType.FSDP,
    "deepspeed_zero3": DistributedType.DEEPSPEED,
}


def test_every_strategy_has_a_config():
    assert {p.stem for p in CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_config_parses_and_opens_with_its_launch_line(path):
    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type == EXPECTED[path.stem]
    first = path.read_text().splitlines()[0]
    assert first == (f"# accelerate launch --config_file configs/accelerate/{path.name} "
                     "$(which moe-unlearn) unlearn CONFIG --out DIR")
    if path.stem == "fsdp2":
        assert cfg.fsdp_config["fsdp_version"] == 2
    if path.stem == "deepspeed_zero3":
        assert cfg.deepspeed_config["zero_stage"] == 3
