"""Run under `torchrun --nproc_per_node 2`: the output dir's lock belongs to the run, not to a process.

Rank 1 is held back until rank 0 has claimed the run's dir (its lock file exists) before it may
look at that dir: the order that once made rank 1 refuse its own run, forced every time.
1. A run interrupted after its step-2 checkpoint, then resumed into the locked-by-itself dir.
2. A foreign live process holds the lock of another dir: both ranks refuse a run into it.

argv: manifest, output root. Writes <root>/rank-<r>.json with what each rank saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cases import raw_config  # noqa: E402
from jobs import run_interrupted  # noqa: E402

from moe_unlearn.core.dist import barrier, broadcast_object, rank  # noqa: E402
from moe_unlearn.errors import UserError  # noqa: E402
from moe_unlearn.paths import LOCK_NAME  # noqa: E402
from moe_unlearn.train import build_config, run_unlearning  # noqa: E402
from moe_unlearn.train.rundir import RunDir  # noqa: E402

HOLDER = """
import sys, time
from pathlib import Path
from moe_unlearn.paths import DirLock
lock = DirLock.acquire(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def rank1_after_rank0_claimed(check):
    """RunDir.check that, on rank 1, first waits (at most 120 s) for the lock file rank 0 takes."""

    def held_back(self: RunDir) -> None:
        if rank() == 1:
            deadline = time.monotonic() + 120
            while not (self.path / LOCK_NAME).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        check(self)

    return held_back


def main(manifest: Path, root: Path) -> None:
    torch.set_num_threads(1)
    RunDir.check = rank1_after_rank0_claimed(RunDir.check)
    seen: dict[str, object] = {}
    cfg = build_config(raw_config("ga-grip", manifest, per_process_batch=4, checkpoint_every=2))
    out = root / "resumed"
    run_interrupted(cfg, out)  # a rank that refuses its own run fails the job here (torchrun ends the other)
    seen["resumed"] = run_unlearning(cfg, out_dir=out, resume=True, progress=False)["resumed"]

    foreign = root / "foreign"
    holder = None
    if rank() == 0:
        foreign.mkdir()
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(foreign)], stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    seen["foreign_pid"] = broadcast_object(holder.pid if holder else None)
    try:
        run_unlearning(cfg, out_dir=foreign, overwrite=True, progress=False)
        seen["foreign_error"] = None
    except UserError as e:
        seen["foreign_error"] = str(e)
    barrier()
    if holder is not None:
        holder.kill()
        holder.wait()
    (root / f"rank-{rank()}.json").write_text(json.dumps(seen))


main(Path(sys.argv[1]), Path(sys.argv[2]))
