"""The (method, adapters) cases whose 2-process runs must equal 1-process runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CASES: dict[str, tuple[str, list[str]]] = {
    "ga-grip": ("ga", ["grip"]),
    "graddiff-trace": ("graddiff", ["trace"]),
    "npo-seuf": ("npo", ["seuf"]),
    "ga-keep_routing": ("ga", ["keep_routing"]),  # its own retain sample and forget routing, cached and gathered
    "sft": ("sft", []),  # `moe-unlearn finetune`'s objective
}
# FSDP2 (test_fsdp2.py) adds the methods that keep the original values (a reference)
FSDP2_CASES: dict[str, tuple[str, list[str]]] = {
    **CASES,
    "graddiff_kl": ("graddiff", []),
    "rmu": ("rmu", []),
    "rmu-seuf": ("rmu", ["seuf"]),  # a reference of expert slices
}
ZERO3_CASES = tuple(FSDP2_CASES)
ZERO3_RESUMED = ("ga-grip", "npo-seuf")  # the slices' own parameters, partitioned with their optimizer state
FSDP2_RESUMED = ("ga-grip", "npo-seuf")  # sharded checkpoints: adapter state; the slice's optimizer state
# lr 1e-3 puts GradDiff+KL's last step where the forget NLL jumps (0.3 -> 1.0): there the float
# noise of 2 vs 1 process reaches 1.6e-4 relative in the final NLL (DDP and FSDP2 alike); 5e-4: 4e-7
# rmu-seuf: SEUF's expert may lie in any layer (which one wins the attribution is a near-tie that
# one CPU's float rounding decides differently from another's); RMU reads the last decoder layer
# (3 of the tiny model's 4), so its loss reaches the chosen slice wherever it lies
OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {"graddiff_kl": {"graddiff": {"retain_loss": "kl"},
                                                                   "train": {"lr": 5e-4}},
                                                   "rmu-seuf": {"rmu": {"layer": 3}}}


def raw_config(name: str, manifest: Path, *, per_process_batch: int, checkpoint_every: int = 0) -> dict[str, Any]:
    method, adapters = FSDP2_CASES[name]
    raw = {
        "method": method, "adapters": adapters, "seed": 0,
        "data": {"manifest": str(manifest), "batch_size": per_process_batch, "retain_batch_size": per_process_batch},
        "train": {"lr": 1e-3, "max_steps": 4, "checkpoint_every": checkpoint_every},
        "eval": {"metrics": ["nll", "mc_acc", "stability", "activation"], "max_examples": 24,
                 "batch_size": per_process_batch},
        "grip": {"ptc_check_batches": 1},
        "keep_routing": {"batch_size": per_process_batch},  # the same global sample as the method's batches
    }
    for section, values in OVERRIDES.get(name, {}).items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw
