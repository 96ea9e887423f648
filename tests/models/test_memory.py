"""The memory estimate: exact parameter counts from configs on the meta device, trained-parameter
counts per recipe setting, the offline geometry of the recipes' default models, and the CLI."""

from __future__ import annotations

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM

from moe_unlearn.cli.main import run
from moe_unlearn.errors import UserError
from moe_unlearn.models.memory import GEOMETRY, model_config, parameter_count
from moe_unlearn.train.memory import estimate_memory
from moe_unlearn.train.config import build_config

TINY = {
    "olmoe": dict(vocab_size=97, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, num_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(vocab_size=97, hidden_size=32, intermediate_size=40, moe_intermediate_size=16,
                      shared_expert_intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, num_experts=6, num_experts_per_tok=2),
    "mixtral": dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
}


@pytest.fixture(scope="module", params=sorted(TINY))
def tiny_dir(request, tmp_path_factory):
    """A saved tiny model of each architecture: (directory, the real model)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(request.param, **TINY[request.param]))
    path = tmp_path_factory.mktemp(request.param)
    model.config.save_pretrained(path)
    return path, model


def _cfg(path, **extra) -> object:
    raw = {"method": "graddiff", "model": {"path": str(path), "dtype": "float32"},
           "data": {"forget": {"path": "f.jsonl", "kind": "text"}, "retain": {"path": "r.jsonl", "kind": "text"},
                    "train_format": "text", "batch_size": 2, "retain_batch_size": 3, "max_length": 16}}
    for k, v in extra.items():
        raw.setdefault(k.split(".")[0], {})
        node = raw
        *parents, last = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return build_config(raw)


def test_meta_count_equals_the_real_model(tiny_dir):
    path, model = tiny_dir
    exact = sum(p.numel() for p in model.parameters())
    assert parameter_count(model_config(str(path))) == exact
    est = estimate_memory(_cfg(path))
    assert est.params == est.trainable == exact and est.weights == 4 * exact
    assert est.gradients == 4 * exact and est.optimizer == 8 * exact and est.reference == 0
    assert est.tokens_per_step == (2 + 3) * 16


def test_trained_subsets_are_counted_exactly(tiny_dir):
    path, model = tiny_dir
    from moe_unlearn.models import moe_layers

    layers = moe_layers(model)
    routers = sum(layer.router_weight.numel() + (0 if layer.router_bias is None else layer.router_bias.numel())
                  for layer in layers)
    assert estimate_memory(_cfg(path, **{"train.params": ["routers"]})).trainable == routers
    one_expert = sum(p.numel() for p in layers[0].experts.parameters()) // layers[0].num_experts
    seuf = estimate_memory(_cfg(path, adapters=["seuf"], **{"seuf.top_m": 2}))
    assert seuf.trainable == 2 * one_expert  # the slices alone (the default)
    paper = estimate_memory(_cfg(path, adapters=["seuf"], **{"seuf.top_m": 2, "seuf.train_router": True}))
    assert paper.trainable == 2 * (one_expert + layers[0].router_weight.numel())
    held = estimate_memory(_cfg(path, adapters=["keep_routing"], **{"keep_routing.batch_size": 5}))
    assert held.tokens_per_step == (2 + 3 + 5) * 16  # its own retain sample is forwarded with a graph
    forget_only = estimate_memory(_cfg(path, adapters=["keep_routing"], **{"keep_routing.roles": ["forget"]}))
    assert forget_only.tokens_per_step == (2 + 3) * 16
    ref = estimate_memory(_cfg(path, **{"graddiff.retain_loss": "kl", "model.dtype": "bfloat16"}))
    assert ref.reference == ref.gradients == 2 * ref.trainable  # KL retain keeps the originals, 2 bytes each


# total parameters the model cards publish (billions)
PUBLISHED = {"Qwen/Qwen1.5-MoE-A2.7B-Chat": 14.3, "deepseek-ai/DeepSeek-V2-Lite": 15.7, "Qwen/Qwen3-30B-A3B": 30.5,
             "allenai/OLMoE-1B-7B-0125-Instruct": 6.9, "mistralai/Mixtral-8x7B-v0.1": 46.7}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_default_model_geometry_gives_the_published_size(name):
    assert abs(parameter_count(model_config(name)) / 1e9 - PUBLISHED[name]) < 0.06


def test_every_recipe_model_has_geometry():
    from benchmark_recipes import RECIPES

    from moe_unlearn.config import resolve_yaml

    assert {resolve_yaml(p)["model"]["path"] for p in RECIPES} <= set(GEOMETRY)


def test_memory_cli(tmp_path, capsys):
    from benchmark_recipes import RECIPES_DIR

    assert run(["memory", str(RECIPES_DIR / "wmdp_cyber.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Qwen/Qwen1.5-MoE-A2.7B-Chat (bfloat16): 14.32B parameters") and "total" in out
    assert run(["memory", str(RECIPES_DIR / "wmdp_cyber.yaml"), "--model", "nobody/unknown-moe"]) == 2
    assert "no geometry for model 'nobody/unknown-moe'" in capsys.readouterr().err
    with pytest.raises(UserError, match="set model.path"):
        estimate_memory(_cfg(tmp_path).__class__(method="graddiff"))
