"""recipes/jobs.py: runs start in the order asked for, and results still come back in task order."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from moe_unlearn.recipes.demo import DemoRun, start_order
from moe_unlearn.recipes.jobs import run_jobs


def _started(task: tuple[float, object]) -> tuple[float, float]:
    """(the task, when it started), after holding its worker for a moment. Tasks meet at the
    barrier in groups of as many as there are workers, so a group starts only once every worker
    holds one of its tasks: which tasks start together shows the order the queue handed them out,
    however long each worker took to start."""
    value, barrier = task
    if barrier is not None:
        barrier.wait(timeout=120)
    start = time.monotonic()
    time.sleep(0.3)
    return value, start


@pytest.mark.parametrize("jobs", [1, 2])
def test_tasks_start_in_start_order_and_return_in_task_order(jobs):
    values = [0.0, 1.0, 2.0, 3.0]
    finished: list[int] = []
    with multiprocessing.get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(jobs)
        results = run_jobs(_started, [(v, barrier) for v in values], jobs=jobs, threads=1,
                           start_order=[3, 2, 1, 0], on_done=lambda i, _: finished.append(i))
    assert [value for value, _ in results] == values
    by_start = [int(value) for value, _ in sorted(results, key=lambda r: r[1])]
    if jobs == 1:
        assert by_start == [3, 2, 1, 0]
    else:  # the queue's first two start together, the next two only after those
        assert (set(by_start[:2]), set(by_start[2:])) == ({3, 2}, {1, 0})
    assert sorted(finished) == [0, 1, 2, 3]


def test_start_order_must_name_each_task_once():
    with pytest.raises(ValueError, match="each of the 3 task indices once"):
        run_jobs(_started, [(0.0, None), (1.0, None), (2.0, None)], jobs=1, threads=1, start_order=[0, 0, 1])


def test_demo_starts_runs_with_more_adapters_first_in_plan_order_otherwise():
    runs = [DemoRun("ga", ()), DemoRun("ga", ("grip",)), DemoRun("ga", ("grip", "keep_routing")),
            DemoRun("npo", ()), DemoRun("npo", ("seuf",))]
    todo = [(r, 0, None, {}) for r in runs]
    assert [runs[i].label for i in start_order(todo)] == ["ga+grip+keep_routing", "ga+grip", "npo+seuf", "ga", "npo"]
