"""Run under `torchrun --nproc_per_node 2`: the ZeRO-3 cases of test_zero3.py through
accelerate's DeepSpeed integration (per-process batch 4).

DeepSpeed runs on CPU over gloo; accelerate drops DeepSpeed when an Accelerator is created with
cpu=True, so each run's Accelerator is created with the plugin configs/accelerate/deepspeed_zero3.yaml
describes, the gloo backend and cpu=False (there is no GPU to pick). DeepSpeed's shared-memory
all-reduce is compiled on first use; it is turned off (gloo does the collectives).

argv: manifest, output root. Writes <root>/<case>/ per case and <root>/resumed-<case>/ for the
resumed case: interrupted inside step 3 on every process, then resumed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import deepspeed.comm  # noqa: F401
from accelerate import Accelerator
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.state import AcceleratorState
from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

import moe_unlearn.train.accel as accel
from moe_unlearn.train.accel import PRECISION

sys.path.insert(0, str(Path(__file__).parent))
from cases import ZERO3_CASES, ZERO3_RESUMED  # noqa: E402
from jobs import run_cases  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "deepspeed_zero3.yaml"
DS = load_config_from_file(str(CONFIG)).deepspeed_config
sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def zero3_accelerator(device: str = "auto", precision: str = "fp32", grad_accum: int = 1, **_trackers) -> Accelerator:
    """The first run's Accelerator sets the process's DeepSpeed state; later runs reuse it (as
    under `accelerate launch`, where it comes from the environment)."""
    common = dict(mixed_precision=PRECISION[precision], gradient_accumulation_steps=grad_accum,
                  step_scheduler_with_optimizer=False)
    if AcceleratorState._shared_state:
        return Accelerator(**common)
    plugin = DeepSpeedPlugin(zero_stage=DS["zero_stage"], zero3_init_flag=DS["zero3_init_flag"],
                             zero3_save_16bit_model=DS["zero3_save_16bit_model"],
                             offload_optimizer_device=DS["offload_optimizer_device"],
                             offload_param_device=DS["offload_param_device"],
                             gradient_accumulation_steps=grad_accum, gradient_clipping=DS["gradient_clipping"])
    return Accelerator(deepspeed_plugin=plugin, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")], **common)


accel.make_accelerator = zero3_accelerator
run_cases(Path(sys.argv[1]), Path(sys.argv[2]), ZERO3_CASES, ZERO3_RESUMED)
