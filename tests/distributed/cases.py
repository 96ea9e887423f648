"""The (method, adapters) cases whose 2-process runs must equal 1-process runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CASES: dict[str, tuple[str, list[str]]] = {
    "ga-grip": ("ga", ["grip"]),
    "graddiff-trace": ("graddiff", ["trace"]),
    "npo-seuf": ("npo", ["seuf"]),
    "ga-keep_routing": ("ga", ["keep_routing"]),  # its own retain sample and forget routing, cached and gathered
}


def raw_config(name: str, manifest: Path, *, per_process_batch: int, checkpoint_every: int = 0) -> dict[str, Any]:
    method, adapters = CASES[name]
    return {
        "method": method, "adapters": adapters, "seed": 0,
        "data": {"manifest": str(manifest), "batch_size": per_process_batch, "retain_batch_size": per_process_batch},
        "train": {"lr": 1e-3, "max_steps": 4, "checkpoint_every": checkpoint_every},
        "eval": {"metrics": ["nll", "mc_acc", "stability", "activation"], "max_examples": 24,
                 "batch_size": per_process_batch},
        "grip": {"ptc_check_batches": 1},
        "keep_routing": {"batch_size": per_process_batch},  # the same global sample as the method's batches
    }
