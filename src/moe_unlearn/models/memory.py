"""GPU memory of an unlearning run, estimated without the weights.

The model is built from its config on the meta device (shapes only, no memory), so parameter
counts are exact; the geometry of the recipes' default models is kept here (values of their
config.json on the hub) so the estimate works offline. A local model directory is read from its
own config.json.

Estimate for one device, no sharding, no activation checkpointing (bytes):
  weights     = P x b                 (b = bytes of model.dtype)
  gradients   = T x b                 (T = trained parameters: train.params, or SEUF's slice)
  optimizer   = 2 T x b               (AdamW's two moments, kept in the parameters' dtype)
  reference   = T x b                 (methods/adapters that keep the original values)
  activations ~ L x N x b x (16 d + 4 k f) + N x V x 8   (rough: N tokens per step = batch x
              max_length, forget + retain; d hidden, k experts per token, f expert width,
              V vocabulary; the last term is the float32 logits and their log-softmax)
GRIP adds its router projector on top (reported separately as an upper bound: full rank).
"""

from __future__ import annotations

from dataclasses import dataclass
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


def model_config(name_or_path: str) -> Any:
    """The transformers config of a local model directory, or of a model in GEOMETRY (offline)."""
    from transformers import AutoConfig

    local = Path(name_or_path).expanduser()
    if (local / "config.json").is_file():
        return AutoConfig.from_pretrained(str(local))
    if name_or_path in GEOMETRY:
        model_type, kwargs = GEOMETRY[name_or_path]
        return AutoConfig.for_model(model_type, **kwargs)
    known = ", ".join(sorted(GEOMETRY))
    raise UserError(f"no geometry for model '{name_or_path}' offline: give a local model directory "
                    f"(with config.json) or one of: {known}")


def meta_model(config: Any) -> torch.nn.Module:
    """The model built from its config on the meta device: every shape, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def parameter_count(config: Any) -> int:
    """Exact number of parameters of the model a config describes."""
    return sum(p.numel() for p in meta_model(config).parameters())


@dataclass
class MemoryEstimate:
    model: str
    dtype: str
    params: int
    trainable: int
    weights: int
    gradients: int
    optimizer: int
    reference: int
    activations: int
    tokens_per_step: int
    grip_projector: int = 0  # upper bound, only with the grip adapter

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.reference + self.activations + self.grip_projector

    def rows(self) -> list[tuple[str, str]]:
        """(item, GiB) lines for printing."""
        items = [("weights", self.weights), ("gradients", self.gradients), ("AdamW moments", self.optimizer),
                 ("reference copy", self.reference), (f"activations (rough, {self.tokens_per_step} tokens/step)", self.activations)]
        if self.grip_projector:
            items.append(("GRIP projector (upper bound: full rank)", self.grip_projector))
        items.append(("total", self.total))
        return [(name, f"{b / GIB:.1f} GiB") for name, b in items]


def _trainable(cfg: Any, model: torch.nn.Module) -> int:
    from moe_unlearn.models.layout import moe_layers
    from moe_unlearn.models.selectors import select_parameters

    if "seuf" in cfg.adapters:  # SEUF trains top_m expert slices and their layers' routers
        layer = moe_layers(model)[0]
        expert = sum(p.numel() for p in layer.experts.parameters()) // layer.num_experts
        top_m = cfg.section("seuf").top_m
        return top_m * (expert + layer.router_weight.numel())
    if cfg.train.lora is not None:
        return 0  # LoRA's adapters are small against the model; not counted
    refs = select_parameters(model, cfg.train.params)
    sizes = {}
    for ref in refs:
        n = ref.param.numel() if ref.expert is None else ref.param.numel() // ref.param.shape[0]
        sizes[(ref.name, ref.expert)] = n
    return sum(sizes.values())


def _uses_reference(cfg: Any) -> bool:
    from moe_unlearn.adapters import ADAPTERS
    from moe_unlearn.methods import METHODS

    method = METHODS.get(cfg.method)(cfg.section(cfg.method))
    return method.uses_reference() or any(getattr(ADAPTERS.get(a), "needs_reference", False) for a in cfg.adapters)


def estimate_memory(cfg: Any, model: str | None = None) -> MemoryEstimate:
    """Memory of running `cfg` (an UnlearnConfig) on one device; `model` overrides cfg.model.path."""
    name = model or cfg.model.path
    if not name:
        raise UserError("set model.path: the memory estimate needs the model's geometry")
    config = model_config(str(name))
    net = meta_model(config)
    from moe_unlearn.models.layout import moe_layers

    layers = moe_layers(net)
    b = DTYPE_BYTES[cfg.model.dtype]
    params = sum(p.numel() for p in net.parameters())
    trainable = _trainable(cfg, net)
    d = int(config.hidden_size)
    k = layers[0].top_k
    f = sum(p.numel() for p in layers[0].experts.parameters()) // (layers[0].num_experts * 3 * d)  # gate, up, down
    vocab = int(config.vocab_size)
    n_layers = int(config.num_hidden_layers)
    batch = cfg.data.batch_size + (cfg.data.retain_batch_size if cfg.data.retain is not None else 0)
    tokens = batch * cfg.data.max_length
    activations = n_layers * tokens * b * (16 * d + 4 * k * f) + tokens * vocab * 8
    grip = 0
    if "grip" in cfg.adapters:
        rank = cfg.section("grip").max_rank or d
        grip = sum(layer.num_experts for layer in layers) * d * min(rank, d) * 4
    return MemoryEstimate(
        model=str(name), dtype=cfg.model.dtype, params=params, trainable=trainable, weights=params * b,
        gradients=trainable * b, optimizer=2 * trainable * b, reference=trainable * b if _uses_reference(cfg) else 0,
        activations=activations, tokens_per_step=tokens, grip_projector=grip,
    )
