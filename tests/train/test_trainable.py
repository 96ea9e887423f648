"""Trainable parameters: expert slices stay surgical, references swap without copies of the model,
the load-balancing loss is never ascended, LoRA merges into a plain checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from moe_unlearn.methods.ga import GA, GAConfig
from moe_unlearn.models import TINY_ARCHS, load_model, moe_layers, select_parameters, tiny_model
from moe_unlearn.models.tiny import tiny_config
from moe_unlearn.train import run_unlearning
from moe_unlearn.core.context import RunContext
from moe_unlearn.core.settings import RunSettings
from moe_unlearn.core import losses
from moe_unlearn.core.trainable import split_refs


def _log(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_expert_slice_trains_alone_and_optimizer_holds_only_slice(run_config, tmp_path, tiny_benchmark):
    _, cfg = run_config("train.params=[expert:0:3]", "train.lr=1e-2")
    out = tmp_path / "slice"
    metrics = run_unlearning(cfg, out_dir=out, progress=False)
    original, _ = load_model(tiny_benchmark.parent / "model")
    after = AutoModelForCausalLM.from_pretrained(out / "model")
    refs = select_parameters(original, ["expert:0:3"])
    sliced = {r.name for r in refs}
    assert sliced and all(r.expert == 3 for r in refs)
    slice_numel = sum(r.param[3].numel() for r in refs)
    assert metrics["memory"]["trainable_params"] == slice_numel
    assert metrics["memory"]["optimizer_state_bytes"] == 2 * 4 * slice_numel  # exp_avg + exp_avg_sq, fp32
    now = dict(after.named_parameters())
    for name, p in original.named_parameters():
        if name in sliced:
            others = [e for e in range(p.shape[0]) if e != 3]
            assert torch.equal(now[name][others], p[others]), name  # bit-identical
            assert not torch.equal(now[name][3], p[3]), name
        else:
            assert torch.equal(now[name], p), name


def _ctx(model, coef: float = 0.0, loss_chunk: int = 256) -> RunContext:
    settings = RunSettings(seed=0, batch_size=4, loss_chunk=loss_chunk, precision="fp32", grad_accum=1,
                           load_balancing_coef=coef)
    return RunContext(model=model, tokenizer=None, layers=moe_layers(model), settings=settings, data=None, splits={},
                      device=torch.device("cpu"), out_dir=None)


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (2, 12), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "index": torch.arange(2)}


def test_ascended_loss_is_pure_cross_entropy_even_with_router_logits_on():
    config = tiny_config("mixtral")
    config.output_router_logits, config.router_aux_loss_coef = True, 0.5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    batch = _batch()
    ctx = _ctx(model)
    loss, _ = GA(GAConfig()).forget_loss(ctx, batch)
    with torch.no_grad():
        hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        logits = model(input_ids=batch["input_ids"]).logits
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1))
    assert float(loss.detach()) == pytest.approx(-float(ce), rel=1e-6)
    # the pitfall is real: transformers' own loss carries 0.5 * aux_loss
    assert float(hf.loss) == pytest.approx(float(ce) + 0.5 * float(hf.aux_loss), rel=1e-5)
    assert float(hf.aux_loss) > 1


def test_load_balancing_is_added_as_a_regulariser():
    model = tiny_model("olmoe", seed=0)
    batch = _batch()
    ctx = _ctx(model, coef=0.1)
    out = ctx.forward(batch, role="forget")
    assert out.aux_loss is not None and float(out.aux_loss.detach()) > 0
    # descending +coef*aux lowers it: one SGD step on the aux term alone reduces it
    params = [p for p in model.parameters() if p.requires_grad]
    (0.1 * out.aux_loss).backward()
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= 0.05 * p.grad
    assert float(ctx.forward(batch, role="forget").aux_loss.detach()) < float(out.aux_loss.detach())


def test_run_logs_load_balancing_with_a_plus_sign(run_config, tmp_path):
    _, cfg = run_config("train.load_balancing_coef=0.1", "train.max_steps=2", method="ga")
    run_unlearning(cfg, out_dir=tmp_path / "lb", progress=False)
    for rec in _log(tmp_path / "lb"):
        assert rec["load_balancing"] > 0
        assert rec["loss"] == pytest.approx(rec["forget_loss"] + rec["load_balancing"], rel=1e-5)


def test_reference_swap_gives_original_logits_and_leaves_grads_alone():
    model = tiny_model("olmoe", seed=0)
    batch = _batch()
    ctx = _ctx(model)
    refs = select_parameters(model, ["routers"]) + select_parameters(model, ["expert:1:2"])
    ctx.trainable = split_refs(refs)
    nbytes = ctx.trainable.keep_originals()
    assert nbytes == 4 * ctx.trainable.numel()
    with torch.no_grad():
        original = model(input_ids=batch["input_ids"]).logits
        for p in ctx.trainable.full.values():
            p.add_(0.5)
        for s in ctx.trainable.slices:
            s.leaf.add_(0.5)
        ctx.trainable.write_back()

    def grads(with_reference: bool) -> list[torch.Tensor]:
        model.zero_grad()
        loss = model(input_ids=batch["input_ids"]).logits.square().mean()
        if with_reference:
            with torch.no_grad(), ctx.reference():
                ref = model(input_ids=batch["input_ids"]).logits
            assert torch.equal(ref, original)
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain, swapped = grads(False), grads(True)
    assert all(torch.equal(a, b) for a, b in zip(plain, swapped))
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=batch["input_ids"]).logits, original)


def test_graddiff_kl_reports_reference_bytes(run_config, tmp_path):
    _, cfg = run_config("graddiff.retain_loss=kl", "train.params=[routers]", "train.max_steps=2")
    metrics = run_unlearning(cfg, out_dir=tmp_path / "kl", progress=False)
    assert metrics["memory"]["reference_bytes"] == 4 * metrics["memory"]["trainable_params"] > 0
    assert all(r["retain_loss"] >= 0 for r in _log(tmp_path / "kl"))
    assert _log(tmp_path / "kl")[0]["retain_loss"] == pytest.approx(0.0, abs=1e-6)  # KL to itself at step 1


def test_lora_on_fused_experts_is_merged_into_a_plain_checkpoint(run_config, tmp_path, tiny_benchmark):
    _, cfg = run_config("train.lora={r: 4, alpha: 8, target_parameters: [mlp.experts.gate_up_proj]}",
                        "train.lr=1e-2", "train.max_steps=3", method="ga")
    metrics = run_unlearning(cfg, out_dir=tmp_path / "lora", progress=False)
    saved = load_file(str(tmp_path / "lora" / "model" / "model.safetensors"))
    assert not any("lora" in k for k in saved)
    original, _ = load_model(tiny_benchmark.parent / "model")
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "model")
    before_p, after_p = dict(original.named_parameters()), dict(after.named_parameters())
    changed = {n for n in before_p if not torch.equal(before_p[n], after_p[n])}
    assert changed and all("experts.gate_up_proj" in n for n in changed)
    assert metrics["memory"]["trainable_params"] < sum(p.numel() for p in original.parameters()) // 10


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_forward_reference_and_load_balancing_on_every_architecture(arch):
    model = tiny_model(arch, seed=0)
    batch = _batch()
    ctx = _ctx(model, coef=0.01)
    ctx.trainable = split_refs(select_parameters(model, ["routers", "expert:0:1"]))
    ctx.trainable.keep_originals()
    with ctx.recording() as forwards:
        loss, _ = GA(GAConfig()).forget_loss(ctx, batch)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1))
        with ctx.reference():
            ref = ctx.forward(batch, role="reference").logits
    assert float(loss.detach()) == pytest.approx(-float(ce), rel=1e-5)
    assert torch.allclose(ref, logits, atol=1e-6)
    assert float(forwards["forget"].aux_loss.detach()) > 0
    loss.backward()
    assert ctx.trainable.full and all(p.grad is not None for p in ctx.trainable.full.values())


def test_reference_rows_computed_after_the_block_use_the_original_trained_head():
    """A reference forward's logits are computed later, chunk by chunk (core/chunked.py): when the
    LM head itself trains, those rows must still come from its ORIGINAL values."""
    model = tiny_model("olmoe", seed=0)
    batch = _batch()
    ctx = _ctx(model, loss_chunk=3)  # several chunks
    ctx.trainable = split_refs(select_parameters(model, ["embeddings", "routers"]))
    ctx.trainable.keep_originals()
    with torch.no_grad():
        original = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        head = model.get_output_embeddings().weight
        head.add_(0.5 * torch.randn(head.shape, generator=torch.Generator().manual_seed(1)))  # the head "trained"
        with ctx.reference():
            ref = ctx.forward(batch, role="reference").lm
        current = ctx.forward(batch, role="forget").lm
        assert torch.allclose(ref.full(), original, atol=1e-6)  # read after the block: still the original head
        assert not torch.allclose(current.full(), original, atol=1e-3)
    kl = losses.masked_kl(ref, ctx.forward(batch, role="forget").lm, batch["labels"])
    assert float(kl) > 0
    kl.backward()
    assert model.get_output_embeddings().weight.grad is not None  # the current side is differentiable
