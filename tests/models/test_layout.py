"""Layout discovery on every tiny architecture, under peft, and on a dense model."""

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model

from moe_unlearn.errors import UserError
from moe_unlearn.models import TINY_ARCHS, capture_routing, moe_layers, tiny_model

BLOCK_NAMES = {"mlp", "block_sparse_moe", "feed_forward"}


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_layers_found_with_shapes(arch):
    model = tiny_model(arch, num_experts=6, top_k=3, layers=3)
    layers = moe_layers(model)
    assert [layer.index for layer in layers] == [0, 1, 2]
    modules = dict(model.named_modules())
    for i, layer in enumerate(layers):
        assert layer.name.endswith(f"layers.{i}." + layer.name.rsplit(".", 1)[-1])
        assert layer.name.rsplit(".", 1)[-1] in BLOCK_NAMES
        assert modules[layer.name] is layer.block and modules[layer.router_name] is layer.router
        assert modules[layer.experts_name] is layer.experts
        assert (layer.num_experts, layer.top_k) == (6, 3)
        assert layer.router_weight.shape == (6, 64) and isinstance(layer.router_weight, torch.nn.Parameter)
    first = layers[0]
    assert (first.router_bias is not None) == (arch == "gpt_oss")
    assert (first.correction_bias is not None) == (arch == "deepseek_v3")
    if first.correction_bias is not None:  # a buffer: never among the trainable parameters
        assert all(p is not first.correction_bias for p in model.parameters())
    has_shared = arch in {"qwen2_moe", "deepseek_v2", "deepseek_v3", "llama4_text"}
    assert (first.shared_experts is not None) == has_shared


def test_peft_wrapped_model_keeps_the_same_layers():
    model = tiny_model("olmoe")
    ids = torch.arange(3, 27).reshape(2, 12)
    plain = [(layer.num_experts, layer.top_k, layer.router_weight.data_ptr()) for layer in moe_layers(model)]
    with torch.no_grad(), capture_routing(model) as before:
        model(input_ids=ids)
    wrapped = get_peft_model(model, LoraConfig(
        r=2, target_modules=["q_proj"], target_parameters=["mlp.experts.gate_up_proj", "mlp.gate.weight"]))
    layers = moe_layers(wrapped)
    assert [(layer.num_experts, layer.top_k, layer.router_weight.data_ptr()) for layer in layers] == plain
    assert all(layer.name.startswith("base_model.model.") for layer in layers)
    assert all(".base_layer" in layer.router_name and type(layer.experts).__name__ == "OlmoeExperts" for layer in layers)
    with torch.no_grad(), capture_routing(wrapped) as after:  # LoRA B starts at zero: same routing
        wrapped(input_ids=ids)
    assert after.tokens == 24 and torch.equal(after.layers[1].indices, before.layers[1].indices)


def test_dense_model_has_no_moe_layers():
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2)
    with pytest.raises(UserError, match="has no MoE layers"):
        moe_layers(transformers.LlamaForCausalLM(config))


def test_tiny_model_is_deterministic_and_in_eval_mode():
    a, b, c = tiny_model("mixtral", seed=3), tiny_model("mixtral", seed=3), tiny_model("mixtral", seed=4)
    assert not a.training
    pa, pb, pc = (dict(m.named_parameters())["model.layers.0.mlp.gate.weight"] for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    with pytest.raises(UserError, match="unknown tiny architecture 'mixtrl'.*did you mean 'mixtral'"):
        tiny_model("mixtrl")
