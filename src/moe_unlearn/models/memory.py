"""A model's shapes without its weights: config (offline for the recipes' default models) and a
meta-device build, for memory estimates (train/memory.py).

The geometry of the recipes' default models is kept here (values of their config.json on the
hub) so estimates work offline; a local model directory is read from its own config.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moe_unlearn.errors import UserError

# config.json values of the default models of configs/benchmarks (the fields that set shapes).
_QWEN15_MOE = ("qwen2_moe", dict(vocab_size=151936, hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1408,
                                 shared_expert_intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
                                 num_key_value_heads=16, num_experts=60, num_experts_per_tok=4, tie_word_embeddings=False))
_DEEPSEEK_V2_LITE = ("deepseek_v2", dict(vocab_size=102400, hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408,
                                         num_hidden_layers=27, num_attention_heads=16, num_key_value_heads=16, n_routed_experts=64,
                                         n_shared_experts=2, num_experts_per_tok=6, first_k_dense_replace=1, kv_lora_rank=512,
                                         q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                                         tie_word_embeddings=False))
_QWEN3_30B = ("qwen3_moe", dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                                num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
                                num_experts_per_tok=8, tie_word_embeddings=False))
_OLMOE = ("olmoe", dict(vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=16, num_attention_heads=16,
                        num_key_value_heads=16, num_experts=64, num_experts_per_tok=8, tie_word_embeddings=False))
_MIXTRAL = ("mixtral", dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                            num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2, tie_word_embeddings=False))
GEOMETRY: dict[str, tuple[str, dict[str, Any]]] = {
    "Qwen/Qwen1.5-MoE-A2.7B": _QWEN15_MOE,
    "Qwen/Qwen1.5-MoE-A2.7B-Chat": _QWEN15_MOE,
    "deepseek-ai/DeepSeek-V2-Lite": _DEEPSEEK_V2_LITE,
    "deepseek-ai/DeepSeek-V2-Lite-Chat": _DEEPSEEK_V2_LITE,
    "Qwen/Qwen3-30B-A3B": _QWEN3_30B,
    "allenai/OLMoE-1B-7B-0924": _OLMOE,
    "allenai/OLMoE-1B-7B-0924-Instruct": _OLMOE,
    "allenai/OLMoE-1B-7B-0125-Instruct": _OLMOE,
    "mistralai/Mixtral-8x7B-v0.1": _MIXTRAL,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": _MIXTRAL,
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1024**3


def model_config(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    """The transformers config of a local model directory, or of a model in GEOMETRY (offline)."""
    from transformers import AutoConfig

    from moe_unlearn.models.loading import load_config

    local = Path(name_or_path)  # as typed, like every path (models.loading)
    if (local / "config.json").is_file():
        return load_config(local, trust_remote_code=trust_remote_code)
    if name_or_path in GEOMETRY:
        model_type, kwargs = GEOMETRY[name_or_path]
        return AutoConfig.for_model(model_type, **kwargs)
    known = ", ".join(sorted(GEOMETRY))
    raise UserError(f"no geometry for model '{name_or_path}' offline: give a local model directory "
                    f"(with config.json) or one of: {known}")


def meta_model(config: Any, *, trust_remote_code: bool = False) -> torch.nn.Module:
    """The model built from its config on the meta device: every shape, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=bool(trust_remote_code))


def parameter_count(config: Any) -> int:
    """Exact number of parameters of the model a config describes."""
    return sum(p.numel() for p in meta_model(config).parameters())
