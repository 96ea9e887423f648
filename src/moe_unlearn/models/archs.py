"""Everything moe-unlearn knows about particular MoE architectures, in one table.

The rest of the package is generic: layout discovery reads routers from transformers' own
`_can_record_outputs` declarations and E / k from the modules; only what differs from the
common pattern (transformers-moe.md) is written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Selection = Literal["experts_args", "router_scores"]


@dataclass(frozen=True)
class ArchRule:
    """How one router class deviates from the common pattern.

    selection: where the routing decision actually used lives.
      "experts_args"  experts(hidden [T, d], top_k_index [T, k], top_k_weights [T, k]); the
                      common case (also DBRX, whose router returns logits only).
      "router_scores" the router returns dense scores [T, E] at `scores_index` that scale each
                      expert's INPUT and every token runs every expert (Llama4); selected
                      experts are the k non-zero scores.
    """

    selection: Selection = "experts_args"
    scores_index: int = 0


# Keyed by router class name. Everything not listed follows the common pattern.
ARCH_RULES: dict[str, ArchRule] = {
    "Llama4Router": ArchRule(selection="router_scores", scores_index=0),
}

# How architectures spell k and E: attribute names on router / block / experts modules and
# config keys alike (layout reads the first one found; tiny configs set every one accepted).
TOP_K_NAMES = ("top_k", "moe_top_k", "num_experts_per_tok", "moe_k", "moe_topk", "topk")
NUM_EXPERTS_NAMES = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
SHARED_EXPERT_NAMES = ("shared_expert", "shared_experts", "shared_mlp")
# Selection-only biases (DeepSeek-V3 family, Ernie's moe_statics): reported, never trained.
CORRECTION_BIAS_NAMES = ("e_score_correction_bias",)


@dataclass(frozen=True)
class TinySpec:
    """How to build a tiny model of one architecture: its config class, the key holding E, extras."""

    config_cls: str
    experts_key: str
    extra: dict[str, Any] = field(default_factory=dict)


# MLA models (DeepSeek) need num_key_value_heads == num_attention_heads; their dense-first
# layers are switched off so every layer is MoE. Llama4 interleaves MoE every step here.
_MLA = dict(kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
            first_k_dense_replace=0, n_group=1, topk_group=1, n_shared_experts=1)
TINY_SPECS: dict[str, TinySpec] = {
    "olmoe": TinySpec("OlmoeConfig", "num_experts"),
    "qwen2_moe": TinySpec("Qwen2MoeConfig", "num_experts", dict(shared_expert_intermediate_size=64)),
    "qwen3_moe": TinySpec("Qwen3MoeConfig", "num_experts"),
    "mixtral": TinySpec("MixtralConfig", "num_local_experts"),
    "deepseek_v2": TinySpec("DeepseekV2Config", "n_routed_experts", dict(_MLA, topk_method="greedy")),
    "deepseek_v3": TinySpec("DeepseekV3Config", "n_routed_experts", dict(_MLA, head_dim=8)),
    "gpt_oss": TinySpec("GptOssConfig", "num_local_experts", dict(sliding_window=16, max_position_embeddings=131072)),
    "phimoe": TinySpec("PhimoeConfig", "num_local_experts"),
    "granitemoe": TinySpec("GraniteMoeConfig", "num_local_experts"),
    "llama4_text": TinySpec("Llama4TextConfig", "num_local_experts",
                            dict(interleave_moe_layer_step=1, intermediate_size_mlp=64, attention_chunk_size=64)),
}

# Other transformers MoE causal LMs that follow the common pattern: built from their default
# config shrunk through the generic names above, with no per-architecture code anywhere
# (verified by tests/models/test_generic_archs.py).
GENERIC_ARCHS: list[str] = [
    "afmoe", "aria_text", "axk1", "axk2", "cohere2_moe", "deepseek_v32", "dots3_note_text", "ernie4_5_moe",
    "exaone_moe", "flex_olmo", "flint", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa", "granitemoe_swa",
    "granitemoeshared", "hunyuan_v1_moe", "hy_v3", "hy_v4", "inkling2_text", "kolibri1", "laguna", "mellum",
    "minimax", "minimax_m2", "minimax_m3_vl_text", "nemotron_h", "solar_open",
]
GENERIC_EXTRA = dict(first_k_dense_replace=0, n_group=1, topk_group=1, decoder_sparse_step=1, mlp_only_layers=[])

# What some causal LMs do to the LM head's output before returning logits (config attribute ->
# transform), applied in this order by core.chunked when it computes logits from hidden states.
# Anything else is caught by core.chunked's one-time check against the model's own logits.
LOGIT_SCALES: dict[str, Literal["multiply", "divide"]] = {
    "logit_scale": "multiply",  # Cohere
    "logits_scaling": "divide",  # Granite
}
LOGIT_SOFTCAP = "final_logit_softcapping"  # cap * tanh(z / cap): Gemma-2 style, Inkling2
