"""Two processes under accelerate's FSDP2 (configs/accelerate/fsdp2.yaml, forced on CPU/gloo: see
fsdp2_job.py) give the numbers of one process with the same global batch, for every adapter
and for the methods that keep a reference (KL retain, RMU): GRIP's writes land in the router
shards, SEUF's expert slice lives in one process's shard, reference values are written into
the shards. Interrupted sharded runs (GRIP's state, the slice's optimizer state beside
accelerate's sharded checkpoint) resume to the same numbers."""

from __future__ import annotations

import json

import pytest
from cases import FSDP2_CASES, FSDP2_RESUMED
from compare import assert_resumed, assert_same_run
from launch import two_process_job

two = two_process_job("fsdp2_job.py")


@pytest.mark.parametrize("name", list(FSDP2_CASES))
def test_fsdp2_two_processes_equal_one_process(two, one_process, name):
    assert_same_run(one_process(name), two / name)


@pytest.mark.parametrize("name", FSDP2_RESUMED)
def test_an_interrupted_fsdp2_run_resumes_to_the_same_numbers(two, name):
    assert_resumed(two / name, two / f"resumed-{name}")
    engine = next((two / f"resumed-{name}" / "checkpoints").glob("step-*/engine"))
    assert (engine / "pytorch_model_fsdp_0").is_dir()  # accelerate's sharded model state


def test_fsdp2_keeps_only_its_shard_of_the_reference(two, one_process):
    one, sharded = (json.loads((d / "metrics.json").read_text())["memory"]["reference_bytes"]
                    for d in (one_process("graddiff_kl"), two / "graddiff_kl"))
    assert 0 < sharded < one  # each process keeps its shards of the original values
