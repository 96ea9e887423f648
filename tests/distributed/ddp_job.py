"""Run under `torchrun --nproc_per_node 2`: the equality cases of test_ddp.py, per-process batch 4.

argv: manifest, output root. Writes <root>/<case>/ (a normal run directory) per case, and
<root>/resumed/: the first case interrupted inside step 3 on every process, then resumed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from moe_unlearn.errors import RunFailure
from moe_unlearn.train import build_config, run_unlearning
from moe_unlearn.train.engine import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from cases import CASES, raw_config  # noqa: E402

torch.set_num_threads(1)
manifest, root = Path(sys.argv[1]), Path(sys.argv[2])
for name in CASES:
    run_unlearning(build_config(raw_config(name, manifest, per_process_batch=4)), out_dir=root / name, progress=False)

# kill-free resume: every process is interrupted inside step 3 (after the step-2 checkpoint)
cfg = build_config(raw_config(next(iter(CASES)), manifest, per_process_batch=4, checkpoint_every=2))
real = Trainer.step


def interrupted(self):
    if self.ctx.step == 2:
        raise KeyboardInterrupt
    return real(self)


Trainer.step = interrupted
try:
    run_unlearning(cfg, out_dir=root / "resumed", progress=False)
except RunFailure:
    pass
Trainer.step = real
run_unlearning(cfg, out_dir=root / "resumed", resume=True, progress=False)
