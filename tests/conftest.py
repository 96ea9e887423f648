"""Shared fixtures: the "tiny" embedded benchmark, built once per cache and shared by workers.

The cache lives under .pytest_cache/, one per ATen kernel set and thread count, so that
pytest-xdist workers (and later runs) share one build; its lock file makes the other workers
wait instead of building again. Every session uses one torch thread (MOE_UNLEARN_TEST_THREADS
overrides it), so that builds are bit-reproducible whichever worker makes them. Tests assert
what the code guarantees, never a bit-level property of one trained model: the suite also
passes with another thread count or another ATen kernel set (ATEN_CPU_CAPABILITY=default),
see scripts/test.sh.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
THREADS = int(os.environ.get("MOE_UNLEARN_TEST_THREADS", "1"))
# a cache per kernel set and thread count: each trains other last bits, and a test that rebuilds
# a cached model must find the one this session's kernels and threads would build
KERNELS = f"torch{torch.__version__}-{torch.backends.cpu.get_cpu_capability()}-{THREADS}t".replace("+", "-")
os.environ.setdefault("MOE_UNLEARN_CACHE", str(REPO / ".pytest_cache" / f"moe-unlearn-{KERNELS}"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_benchmark() -> Path:
    """Path to manifest.json of the "tiny" preset (seed 0, forget domain "pathogens")."""
    from moe_unlearn.benchmark import cached_benchmark

    return cached_benchmark("tiny", seed=0)
