"""Independent runs in worker processes, each with its own torch thread count.

A small model's kernels do not scale across threads, so on a 2-core CPU two 1-thread runs
finish sooner than two 2-thread runs one after the other. A CPU run computes the same numbers
in any process given the same config, seed and thread count, so a parallel matrix equals a
serial one at that thread count (tests/test_cli_demo.py checks it).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def cpu_threads() -> int:
    """The torch threads this process may use (OMP_NUM_THREADS, else the usable cores)."""
    import torch

    return max(1, torch.get_num_threads())


def default_jobs(device: str) -> int:
    """Parallel runs by default only on CPU, one per usable core up to 2 (one device runs one job at a time)."""
    import torch

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return min(2, cpu_threads()) if on_cpu else 1


def _init_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def run_jobs(fn: Callable[[T], R], tasks: Sequence[T], *, jobs: int, threads: int,
             on_done: Callable[[int, R], None] | None = None, start_order: Sequence[int] | None = None) -> list[R]:
    """fn over tasks in `jobs` spawned processes of `threads` torch threads each (jobs <= 1: in this
    process, as it is). Tasks start in start_order (task indices; default: as given), so the
    longest can go first and the short ones fill the last worker's tail; results come back in task
    order; on_done(i, result) as each one finishes. A worker's exception is raised here after the
    jobs not yet started are cancelled."""
    results: list[Any] = [None] * len(tasks)
    order = list(range(len(tasks))) if start_order is None else list(start_order)
    if sorted(order) != list(range(len(tasks))):
        raise ValueError(f"start_order must list each of the {len(tasks)} task indices once, got {order}")
    if jobs <= 1 or len(tasks) <= 1:
        for i in order:
            results[i] = fn(tasks[i])
            if on_done:
                on_done(i, results[i])
        return results
    ctx = multiprocessing.get_context("spawn")  # no forked torch / OpenMP state
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        pending: dict[Future[R], int] = {pool.submit(fn, tasks[i]): i for i in order}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):
                    i = pending.pop(future)
                    results[i] = future.result()
                    if on_done:
                        on_done(i, results[i])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results
