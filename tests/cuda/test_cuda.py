"""CUDA checks (skipped without a CUDA device; scripts/gpu_check.sh runs them on a GPU machine)."""

from __future__ import annotations

import json

import pytest
import torch

from moe_unlearn.models import capture_routing, replay_routing, tiny_model
from moe_unlearn.models.loading import load_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

QUICK_EVAL = {"metrics": ["nll", "mc_acc", "stability", "replay"], "max_examples": 16, "batch_size": 8}


def _ids(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 250, (2, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("arch", ["olmoe", "qwen3_moe", "mixtral", "deepseek_v3", "gpt_oss"])
def test_capture_and_replay_on_cuda(arch):
    model = tiny_model(arch, seed=0).cuda()
    batch = {k: v.cuda() for k, v in _ids().items()}
    with torch.no_grad(), capture_routing(model) as cap:
        logits = model(**batch).logits
    assert all(layer.indices.is_cuda and layer.indices.shape == (24, 2) for layer in cap.layers)
    with torch.no_grad(), replay_routing(model, cap):
        replayed = model(**batch).logits
    assert torch.allclose(replayed, logits, atol=1e-5)
    cpu = tiny_model(arch, seed=0)
    with torch.no_grad():
        assert torch.allclose(cpu(**_ids()).logits, logits.cpu(), atol=1e-3)


@pytest.mark.parametrize("method, adapters, precision", [
    ("ga", ["grip"], "bf16"),
    ("graddiff", ["trace"], "bf16"),
    ("npo", ["seuf"], "bf16"),
    ("graddiff", [], "fp16"),
])
def test_short_unlearning_run_on_cuda(tiny_benchmark, tmp_path, method, adapters, precision):
    from moe_unlearn.train import build_config, run_unlearning

    cfg = build_config({
        "method": method, "adapters": adapters, "model": {"device": "cuda"},
        "data": {"manifest": str(tiny_benchmark), "batch_size": 8, "retain_batch_size": 8},
        "train": {"lr": 1e-3, "max_steps": 3, "checkpoint_every": 2, "precision": precision},
        "eval": QUICK_EVAL,
    })
    metrics = run_unlearning(cfg, out_dir=tmp_path / "run", progress=False)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(r["loss"] == r["loss"] for r in log)  # finite
    assert metrics["forget"]["nll"] is not None and metrics["routing"]["stability"]["retain"] is not None
    model, _ = load_model(tmp_path / "run" / "model", device="cpu")  # a plain safetensors dir
    assert next(model.parameters()).device.type == "cpu"


def test_grip_bases_from_inputs_stay_on_cuda_when_an_expert_has_no_token():
    """An expert no retained token chose gets rank 0; its entries are made on the inputs' device
    (the real-geometry bench hit a CPU tensor here on the first GPU run)."""
    from moe_unlearn.adapters.nullspace import span_bases_from_inputs

    x = torch.randn(20, 16, device="cuda")
    selected = torch.zeros(20, 4, dtype=torch.bool, device="cuda")
    selected[:10, 0] = selected[10:, 2] = True  # experts 1 and 3: no token
    bases = span_bases_from_inputs(x, selected, rel_energy=1e-3, max_rank=None, dtype=torch.float32)
    assert {t.device.type for t in (bases.basis, bases.rank, bases.energy)} == {"cuda"}
    assert bases.rank.tolist()[1::2] == [0, 0] and bases.energy.tolist()[1::2] == [1.0, 1.0]


def test_width_buckets_on_cuda_from_device_or_host_bases():
    """GRIP regroups CUDA bases through host copies (the device never holds both): either way
    the stacks live on the device and project as each layer's own bases do."""
    from moe_unlearn.adapters.nullspace import WidthBuckets, span_bases

    g = torch.Generator().manual_seed(0)
    grams = [torch.stack([a @ a.T for a in (torch.randn(16, r, generator=g, dtype=torch.float64) for r in ranks)])
             for ranks in ([1, 4, 9, 14], [2, 6, 11, 15])]
    layers = [span_bases(gram.cuda(), rel_energy=1e-9, max_rank=None, dtype=torch.float32) for gram in grams]
    delta = torch.randn(8, 16, device="cuda")
    expected = torch.cat([b.project(part) for b, part in zip(layers, delta.split(4))])
    host = [type(b)(b.basis.cpu(), b.rank, b.energy, b.complement) for b in layers]
    for stack in (WidthBuckets.build(layers, 3), WidthBuckets.build(host, 3, torch.device("cuda"))):
        assert {b.device.type for b in stack.basis} == {"cuda"} and stack.order.device.type == "cuda"
        assert torch.allclose(stack.project(delta), expected, atol=1e-5)
