"""Run under `torchrun --nproc_per_node 2`: the equality cases of test_fsdp2.py through
accelerate's own FSDP2 (per-process batch 4).

accelerate enables FSDP only for accelerator devices; torch's fully_shard itself runs on CPU
over gloo. So each run's Accelerator is created on CPU as usual, then its state is switched to
FSDP with the plugin that configs/accelerate/fsdp2.yaml describes (auto-wrap per decoder layer,
reshard after forward, sharded state dicts): accelerate's FSDP2 prepare, clipping, get_state_dict
and save_state/load_state then run as on GPUs.

argv: manifest, output root. Writes <root>/<case>/ per case and <root>/resumed-<case>/ for the
RESUMED cases: interrupted inside step 3 on every process, then resumed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate.commands.config.config_args import load_config_from_file
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

import moe_unlearn.train.accel as accel

sys.path.insert(0, str(Path(__file__).parent))
from cases import FSDP2_CASES, FSDP2_RESUMED  # noqa: E402
from jobs import run_cases  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "fsdp2.yaml"
FSDP = load_config_from_file(str(CONFIG)).fsdp_config
make_accelerator = accel.make_accelerator


def fsdp2_accelerator(device: str = "auto", precision: str = "fp32", grad_accum: int = 1, **trackers):
    acc = make_accelerator(device, precision, grad_accum, **trackers)
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=FSDP["fsdp_version"],
        auto_wrap_policy=FSDP["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=[FSDP["fsdp_transformer_layer_cls_to_wrap"]],
        reshard_after_forward=FSDP["fsdp_reshard_after_forward"],
        state_dict_type=FSDP["fsdp_state_dict_type"],
        cpu_ram_efficient_loading=FSDP["fsdp_cpu_ram_efficient_loading"],
    )
    acc.state.fsdp_plugin = plugin
    acc.state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return acc


accel.make_accelerator = fsdp2_accelerator
run_cases(Path(sys.argv[1]), Path(sys.argv[2]), FSDP2_CASES, FSDP2_RESUMED)
