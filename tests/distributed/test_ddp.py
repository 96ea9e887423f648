"""Two processes (DDP over gloo, per-process batch 4) give the numbers of one process with the
same global batch (8): losses and metrics within 1e-4 relative, routing exactly; a resumed
2-process run equals an uninterrupted one."""

from __future__ import annotations

import pytest
from cases import CASES
from compare import assert_resumed, assert_same_run
from launch import two_process_job

two = two_process_job("ddp_job.py")


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_process_with_the_global_batch(two, one_process, name):
    assert_same_run(one_process(name), two / name)


def test_an_interrupted_two_process_run_resumes_to_the_same_numbers(two):
    first = next(iter(CASES))
    assert_resumed(two / first, two / f"resumed-{first}")
