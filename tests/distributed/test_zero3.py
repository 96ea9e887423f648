"""Two processes under accelerate's DeepSpeed ZeRO-3 (configs/accelerate/deepspeed_zero3.yaml, on
CPU over gloo: see zero3_job.py) give the numbers of one process with the same global batch:
GRIP reads and writes partitioned routers (GatheredParameters and the fp32 master copy), TRACE
and keep_routing read activations, SEUF trains its expert slices as parameters of their own
(core.slice_params). Interrupted ZeRO-3 runs resume to the same numbers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
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


def test_zero3_trains_slices_with_their_own_optimizer_state_and_saves_plain_weights(two, one_process, tiny_benchmark):
    """Each process holds its partition of the slices' optimizer state (half of one process's,
    which holds the slices' only); the saved model has the original's tensor names, and only the
    chosen expert's rows changed."""
    one, zero3 = one_process("npo-seuf"), two / "npo-seuf"
    memory = [json.loads((d / "metrics.json").read_text())["memory"] for d in (one, zero3)]
    assert memory[1]["optimizer_state_bytes"] * 2 == memory[0]["optimizer_state_bytes"] > 0
    manifest = json.loads(tiny_benchmark.read_text())
    original = load_file(next((tiny_benchmark.parent / manifest["model"]).glob("*.safetensors")))
    saved = load_file(zero3 / "model" / "model.safetensors")
    assert set(saved) == set(original)
    changed = {k for k in saved if not torch.equal(saved[k], original[k])}
    expert = json.loads((zero3 / "metrics.json").read_text())["adapter_info"]["seuf"]["targets"]
    assert changed and all(".experts." in k for k in changed), changed
    assert all(any(f"layers.{t['layer']}." in k and f".experts.{t['expert']}." in k for t in expert)
               for k in changed), (changed, expert)
