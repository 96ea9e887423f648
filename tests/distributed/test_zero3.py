"""Two processes under accelerate's DeepSpeed ZeRO-3 (configs/accelerate/deepspeed_zero3.yaml, on
CPU over gloo: see zero3_job.py) give the numbers of one process with the same global batch:
GRIP reads and writes partitioned routers (GatheredParameters and the fp32 master copy), TRACE
and keep_routing read activations. An interrupted ZeRO-3 run resumes to the same numbers."""

from __future__ import annotations

import pytest
from cases import ZERO3_CASES, ZERO3_RESUMED
from compare import assert_resumed, assert_same_run
from launch import two_process_job

two = two_process_job("zero3_job.py")


@pytest.mark.parametrize("name", ZERO3_CASES)
def test_zero3_two_processes_equal_one_process(two, one_process, name):
    assert_same_run(one_process(name), two / name)


@pytest.mark.parametrize("name", ZERO3_RESUMED)
def test_an_interrupted_zero3_run_resumes_to_the_same_numbers(two, name):
    assert_resumed(two / name, two / f"resumed-{name}")
    assert next((two / f"resumed-{name}" / "checkpoints").glob("step-*/engine/pytorch_model")).is_dir()
