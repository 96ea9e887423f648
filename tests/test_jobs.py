"""recipes/jobs.py: runs start in the order asked for, and results still come back in task order."""

from __future__ import annotations

import time

import pytest

from moe_unlearn.recipes.demo import DemoRun, start_order
from moe_unlearn.recipes.jobs import run_jobs


def _started(task: float) -> tuple[float, float]:
    """(the task, when it started), after holding its worker for a moment."""
    start = time.monotonic()
    time.sleep(0.3)
    return task, start


@pytest.mark.parametrize("jobs", [1, 2])
def test_tasks_start_in_start_order_and_return_in_task_order(jobs):
    tasks = [0.0, 1.0, 2.0, 3.0]
    finished: list[int] = []
    results = run_jobs(_started, tasks, jobs=jobs, threads=1, start_order=[3, 2, 1, 0],
                       on_done=lambda i, _: finished.append(i))
    assert [task for task, _ in results] == tasks
    by_start = [int(task) for task, _ in sorted(results, key=lambda r: r[1])]
    if jobs == 1:
        assert by_start == [3, 2, 1, 0]
    else:  # two workers take the queue's first two together, then the next two as those finish
        assert (set(by_start[:2]), set(by_start[2:])) == ({3, 2}, {1, 0})
    assert sorted(finished) == [0, 1, 2, 3]


def test_start_order_must_name_each_task_once():
    with pytest.raises(ValueError, match="each of the 3 task indices once"):
        run_jobs(_started, [0.0, 1.0, 2.0], jobs=1, threads=1, start_order=[0, 0, 1])


def test_demo_starts_runs_with_more_adapters_first_in_plan_order_otherwise():
    runs = [DemoRun("ga", ()), DemoRun("ga", ("grip",)), DemoRun("ga", ("grip", "keep_routing")),
            DemoRun("npo", ()), DemoRun("npo", ("seuf",))]
    todo = [(r, 0, None, {}) for r in runs]
    assert [runs[i].label for i in start_order(todo)] == ["ga+grip+keep_routing", "ga+grip", "npo+seuf", "ga", "npo"]
