"""A model's shapes without its weights: config (offline for the recipes' default models) and a
meta-device build, for memory estimates (train/memory.py).

The geometry of the recipes' default models is kept here (values of their config.json on the
hub) so estimates work offline; a local model directory is read from its own config.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from moe_unlearn.errors import UserError, first_line

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

    from moe_unlearn.models.loading import load_config, looks_local

    local = Path(name_or_path)  # as typed, like every path (models.loading)
    if (local / "config.json").is_file():
        return load_config(local, trust_remote_code=trust_remote_code)
    if looks_local(name_or_path) and name_or_path not in GEOMETRY:
        what = "has no config.json" if local.exists() else "does not exist"
        raise UserError(f"model path '{name_or_path}' {what}; give a model directory or a hub id")
    if name_or_path in GEOMETRY:
        model_type, kwargs = GEOMETRY[name_or_path]
        return AutoConfig.for_model(model_type, **kwargs)
    known = ", ".join(sorted(GEOMETRY))
    raise UserError(f"no geometry for model '{name_or_path}' offline: give a local model directory "
                    f"(with config.json) or one of: {known}")


def meta_model(config: Any, *, trust_remote_code: bool = False) -> torch.nn.Module:
    """The model built from its config on the meta device: every shape, no memory."""
    from transformers import AutoModelForCausalLM

    from moe_unlearn.models.loading import check_sizes

    name = getattr(config, "name_or_path", "") or type(config).__name__
    check_sizes(config, name)
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=bool(trust_remote_code))
    except Exception as e:  # a hand-edited config.json fails inside the model's code
        raise UserError(f"model '{name}': config.json does not describe a model that can be built "
                        f"({type(e).__name__}: {first_line(e)[:200]})") from None


def parameter_count(config: Any) -> int:
    """Exact number of parameters of the model a config describes."""
    return sum(p.numel() for p in meta_model(config).parameters())


class _KernelAttention(torch.autograd.Function):
    """Shapes of a memory-efficient attention kernel (flash / efficient SDPA, on CUDA and CPU):
    it saves q, k, v, its output and float32 log-sum-exps [B, H, S], never the S x S scores."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = q.new_empty(q.shape[:-1] + v.shape[-1:])
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:  # pragma: no cover - never run
        raise NotImplementedError


def _kernel_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA path with a padding mask: grouped K/V heads repeated first (sdpa_attention_forward)."""
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    return _KernelAttention.apply(query, key, value).transpose(1, 2).contiguous(), None


def saved_activation_bytes(net: torch.nn.Module, *, trains: Callable[[str], bool], seq_len: int,
                           dtype: torch.dtype) -> int:
    """Bytes autograd keeps for backward over ONE row of `seq_len` tokens, read from the model's own forward on the meta device (no memory, no compute).

    Parameters named so that `trains(name)` is true require gradients, the rest are frozen, so
    the count holds what this run's graph keeps: nothing below the first trained parameter, and
    a frozen linear layer's input is not kept. Attention is sized as a memory-efficient kernel.
    Raises whatever the model's code raises on meta tensors (e.g. a data-dependent `.item()`).
    """
    from transformers import AttentionInterface

    AttentionInterface.register("moe_unlearn_trace", _kernel_attention)
    # grouped_mm's meta kernel takes bf16 only (its CUDA rule): trace in bf16, count at `dtype`
    traced = torch.bfloat16
    scale = torch.empty(0, dtype=dtype).element_size()
    net = net.to(traced)
    for name, p in net.named_parameters():
        p.requires_grad_(trains(name))
    own = {t.untyped_storage()._cdata for t in (*net.parameters(), *net.buffers())}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st._cdata not in own and st._cdata not in saved:
            n = st.nbytes() // t.element_size() * scale if t.dtype == traced else st.nbytes()
            saved[st._cdata] = n
        return t

    decoder = net.get_decoder()
    previous = decoder.config._attn_implementation
    decoder.set_attn_implementation("moe_unlearn_trace")
    try:
        ids = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            decoder(input_ids=ids, attention_mask=None, use_cache=False)
    finally:
        decoder.set_attn_implementation(previous)
    return sum(saved.values())
