"""The body of every 2-process job: run the cases, then interrupt the resumed ones inside step 3
on every process (after the step-2 checkpoint) and resume them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch

from cases import raw_config
from moe_unlearn.errors import RunFailure
from moe_unlearn.train import build_config, run_unlearning
from moe_unlearn.train.engine import Trainer


def run_interrupted(cfg: Any, out: Path) -> None:
    """Run cfg into out, interrupted inside step 3 on every process (after the step-2 checkpoint)."""
    real = Trainer.step

    def interrupted(self: Trainer) -> dict:
        if self.ctx.step == 2:
            raise KeyboardInterrupt
        return real(self)

    Trainer.step = interrupted
    try:
        run_unlearning(cfg, out_dir=out, progress=False)
    except RunFailure:
        pass
    finally:
        Trainer.step = real


def run_cases(manifest: Path, root: Path, cases: Iterable[str], resumed: Iterable[str]) -> None:
    """<root>/<case>/ per case (per-process batch 4) and <root>/resumed-<case>/ per resumed case."""
    torch.set_num_threads(1)
    for name in cases:
        run_unlearning(build_config(raw_config(name, manifest, per_process_batch=4)), out_dir=root / name,
                       progress=False)
    for name in resumed:
        cfg = build_config(raw_config(name, manifest, per_process_batch=4, checkpoint_every=2))
        run_interrupted(cfg, root / f"resumed-{name}")
        run_unlearning(cfg, out_dir=root / f"resumed-{name}", resume=True, progress=False)
