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
import re
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it on import

from moe_unlearn.benchmark.base_model import kernels  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
THREADS = int(os.environ.get("MOE_UNLEARN_TEST_THREADS", "1"))
# a cache per kernel set and thread count: each trains other last bits, and a test that rebuilds
# a cached model must find the one this session's kernels and threads would build
BUILDER = re.sub(r"[^A-Za-z0-9.]+", "-", f"{kernels()} {THREADS}t")  # e.g. torch-2.13.0-cpu-AVX512-1t
os.environ.setdefault("MOE_UNLEARN_CACHE", str(REPO / ".pytest_cache" / f"moe-unlearn-{BUILDER}"))
torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_benchmark() -> Path:
    """Path to manifest.json of the "tiny" preset (seed 0, forget domain "pathogens")."""
    from moe_unlearn.benchmark import cached_benchmark

    return cached_benchmark("tiny", seed=0)
