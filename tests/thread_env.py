"""The environment for a test's subprocess that must compute what this process computes."""

from __future__ import annotations

import os


def same_threads_env() -> dict[str, str]:
    """os.environ with this process's torch thread count (MOE_UNLEARN_TEST_THREADS, 1 by default,
    tests/conftest.py): a run split between a subprocess and this process then sums its floats in
    one order, so it can equal a run made here in every bit."""
    import torch

    threads = str(torch.get_num_threads())
    return dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
