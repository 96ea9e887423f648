"""Tiny random MoE causal LMs built from transformers configs (nothing downloaded).

Used by tests and the embedded benchmark. `tiny_model("olmoe")` builds a 2-layer, 8-expert,
top-2 model with hidden size 64 in eval mode; the same seed gives the same weights.
TINY_ARCHS have hand-checked configs; GENERIC_ARCHS are shrunk generically from their defaults.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from moe_unlearn.errors import UserError
from moe_unlearn.registry import suggest


@dataclass(frozen=True)
class TinySpec:
    """How one architecture spells its config: class name, the key holding E, extras."""

    config_cls: str
    experts_key: str
    extra: dict[str, Any] = field(default_factory=dict)


# MLA models (DeepSeek) need num_key_value_heads == num_attention_heads; their dense-first
# layers are switched off so every layer is MoE. Llama4 interleaves MoE every step here.
_MLA = dict(kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
            first_k_dense_replace=0, n_group=1, topk_group=1, n_shared_experts=1)
_SPECS: dict[str, TinySpec] = {
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
TINY_ARCHS: list[str] = list(_SPECS)

# Other transformers MoE causal LMs that follow the common pattern: built from their default
# config shrunk through the generic keys below, with no per-architecture code anywhere
# (verified by tests/models/test_generic_archs.py on transformers 5.23).
GENERIC_ARCHS: list[str] = [
    "afmoe", "aria_text", "axk1", "axk2", "cohere2_moe", "deepseek_v32", "dots3_note_text", "ernie4_5_moe",
    "exaone_moe", "flex_olmo", "flint", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa", "granitemoe_swa",
    "granitemoeshared", "hunyuan_v1_moe", "hy_v3", "hy_v4", "inkling2_text", "kolibri1", "laguna", "mellum",
    "minimax", "minimax_m2", "minimax_m3_vl_text", "nemotron_h", "solar_open",
]
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
_TOP_K_KEYS = ("num_experts_per_tok", "moe_k", "moe_topk", "moe_top_k", "top_k")
_GENERIC_EXTRA = dict(first_k_dense_replace=0, n_group=1, topk_group=1, decoder_sparse_step=1, mlp_only_layers=[])


def tiny_config(arch: str, *, num_experts: int = 8, top_k: int = 2, layers: int = 2, hidden: int = 64,
                vocab: int = 256) -> transformers.PretrainedConfig:
    """The transformers config of a tiny `arch` model (4 heads of hidden/4, intermediate = hidden)."""
    known = TINY_ARCHS + GENERIC_ARCHS
    if arch not in known:
        raise UserError(f"unknown tiny architecture '{arch}'{suggest(arch, known)}; choose one of: {', '.join(known)}")
    heads = 4
    kwargs: dict[str, Any] = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden, moe_intermediate_size=hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        head_dim=hidden // heads, max_position_embeddings=512, num_experts_per_tok=top_k,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    if arch in GENERIC_ARCHS:
        config_cls = CONFIG_MAPPING[arch]
        accepted = set(inspect.signature(config_cls.__init__).parameters)
        kwargs.update(_GENERIC_EXTRA, shared_expert_intermediate_size=hidden,
                      **dict.fromkeys(_EXPERT_KEYS, num_experts), **dict.fromkeys(_TOP_K_KEYS, top_k))
        return config_cls(**{k: v for k, v in kwargs.items() if k in accepted})
    spec = _SPECS[arch]
    kwargs[spec.experts_key] = num_experts
    kwargs.update(spec.extra)
    return getattr(transformers, spec.config_cls)(**kwargs)


def tiny_model(arch: str, *, seed: int = 0, num_experts: int = 8, top_k: int = 2, layers: int = 2,
               hidden: int = 64, vocab: int = 256) -> PreTrainedModel:
    """A tiny random `arch` causal LM in eval mode, float32, deterministic for a given seed."""
    config = tiny_config(arch, num_experts=num_experts, top_k=top_k, layers=layers, hidden=hidden, vocab=vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


TINY_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII (ids < 100, fits vocab 256), built offline.

    pad=0, bos=1, eos=2 match `tiny_config`; saves and loads with AutoTokenizer.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
