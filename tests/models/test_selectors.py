"""Parameter selectors: the right tensors, expert slices, deduplication and clear errors."""

import pytest

from moe_unlearn.errors import UserError
from moe_unlearn.models import moe_layers, select_parameters, tiny_model


@pytest.fixture(scope="module")
def qwen2():
    return tiny_model("qwen2_moe", layers=3)


def names(refs):
    return [r.name for r in refs]


def test_routers_and_experts(qwen2):
    assert names(select_parameters(qwen2, ["routers"])) == [f"model.layers.{i}.mlp.gate.weight" for i in range(3)]
    experts = select_parameters(qwen2, ["experts"])
    assert names(experts) == [f"model.layers.{i}.mlp.experts.{p}" for i in range(3) for p in ("gate_up_proj", "down_proj")]
    assert all(r.expert is None for r in experts)
    gpt = tiny_model("gpt_oss")
    assert names(select_parameters(gpt, ["routers"])) == [
        f"model.layers.{i}.mlp.router.{p}" for i in range(2) for p in ("weight", "bias")]


def test_one_expert_is_a_slice_of_each_fused_tensor(qwen2):
    refs = select_parameters(qwen2, ["expert:1:3"])
    assert [(r.name, r.expert) for r in refs] == [
        ("model.layers.1.mlp.experts.gate_up_proj", 3), ("model.layers.1.mlp.experts.down_proj", 3)]
    assert refs[0].param is moe_layers(qwen2)[1].experts.gate_up_proj
    gpt = tiny_model("gpt_oss")  # biases are fused [E, ...] too
    assert len(select_parameters(gpt, ["expert:0:7"])) == 4


def test_shared_attention_embeddings_layers(qwen2):
    shared = names(select_parameters(qwen2, ["shared_experts"]))
    assert len(shared) == 3 * 4 and all(".mlp.shared_expert" in n for n in shared)
    assert select_parameters(tiny_model("olmoe"), ["shared_experts"]) == []
    attention = names(select_parameters(qwen2, ["attention"]))
    assert attention and all(".self_attn." in n for n in attention)
    assert names(select_parameters(qwen2, ["embeddings"])) == ["model.embed_tokens.weight", "lm_head.weight"]
    one = names(select_parameters(qwen2, ["layers:1"]))
    assert one and all(n.startswith("model.layers.1.") for n in one)
    assert names(select_parameters(qwen2, ["layers:0-2"])) == names(select_parameters(qwen2, ["layers:0,1,2"]))
    assert names(select_parameters(qwen2, ["regex:layers\\.2\\..*\\.gate\\.weight$"])) == ["model.layers.2.mlp.gate.weight"]


def test_all_union_and_dedup(qwen2):
    every = select_parameters(qwen2, ["all"])
    assert len(every) == len(list(qwen2.parameters()))
    twice = select_parameters(qwen2, ["routers", "routers", "regex:mlp\\.gate\\.weight"])
    assert names(twice) == names(select_parameters(qwen2, ["routers"]))
    covered = select_parameters(qwen2, ["experts", "expert:0:1"])  # the whole tensor covers its slice
    assert all(r.expert is None for r in covered) and len(covered) == 6
    mixed = select_parameters(qwen2, ["expert:0:2", "routers", "expert:0:1"])
    assert [(r.name.split(".")[-1], r.expert) for r in mixed][:5] == [
        ("weight", None), ("gate_up_proj", 1), ("gate_up_proj", 2), ("down_proj", 1), ("down_proj", 2)]


def test_correction_bias_never_selected():
    model = tiny_model("deepseek_v3")
    selected = names(select_parameters(model, ["all", "routers", "regex:correction"]))
    assert not any("correction" in n for n in selected)


@pytest.mark.parametrize("spec, message", [
    ("router", "unknown parameter spec 'router'; valid forms: all, routers"),
    ("expert:3:0", "MoE layer 3 out of range 0..2"),
    ("expert:0:8", "expert 8 out of range 0..7"),
    ("expert:0", "write expert:L:E"),
    ("layers:7", "decoder layer\\(s\\) \\[7\\] do not exist"),
    ("layers:a-b", "write layers:0-3"),
    ("regex:[", "not a valid regular expression"),
    ("regex:", "unknown parameter spec"),
])
def test_bad_specs(qwen2, spec, message):
    with pytest.raises(UserError, match=message):
        select_parameters(qwen2, [spec])
