"""GPU memory of an unlearning run, estimated without the weights.

The model is built from its config on the meta device (models/memory.py: shapes only, no memory),
so parameter counts are exact. Estimate for one device, no sharding, no activation
checkpointing (bytes):
  weights     = P x b                 (b = bytes of model.dtype)
  gradients   = T x b                 (T = trained parameters: train.params, the method's own
                                       selection, or what an adapter that selects_trainable estimates)
  optimizer   = 2 T x b               (AdamW's two moments, kept in the parameters' dtype)
  reference   = T x b                 (methods/adapters that keep the original values)
  activations ~ L x N x b x (16 d + 4 k f) + N x V x 8   (rough: N tokens per step = batch x
              max_length, forget + retain; d hidden, k experts per token, f expert width,
              V vocabulary; the last term is the float32 logits and their log-softmax)
  adapters    = what each adapter declares with estimate_bytes (GRIP: its projectors, full rank)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from moe_unlearn.adapters import ADAPTERS, Adapter
from moe_unlearn.errors import UserError
from moe_unlearn.methods import METHODS, Method
from moe_unlearn.models import moe_layers, select_parameters
from moe_unlearn.models.memory import DTYPE_BYTES, GIB, meta_model, model_config


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
    adapters: int = 0  # what the adapters keep besides the model (e.g. GRIP's projectors, upper bound)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.reference + self.activations + self.adapters

    def rows(self) -> list[tuple[str, str]]:
        """(item, GiB) lines for printing."""
        items = [("weights", self.weights), ("gradients", self.gradients), ("AdamW moments", self.optimizer),
                 ("reference copy", self.reference), (f"activations (rough, {self.tokens_per_step} tokens/step)", self.activations)]
        if self.adapters:
            items.append(("adapters (upper bound)", self.adapters))
        items.append(("total", self.total))
        return [(name, f"{b / GIB:.1f} GiB") for name, b in items]


def _trainable(cfg: Any, model: torch.nn.Module, method: Method, adapters: list[Adapter]) -> int:
    selected = [n for a in adapters if a.selects_trainable and (n := a.estimate_trainable(moe_layers(model))) is not None]
    if selected:  # an adapter that chooses what trains (SEUF) says how much it will choose
        return min(selected)
    if cfg.train.lora is not None:
        return 0  # LoRA's adapters are small against the model; not counted
    refs = select_parameters(model, method.select_params(None, cfg.train.params) or cfg.train.params)
    sizes = {}
    for ref in refs:
        n = ref.param.numel() if ref.expert is None else ref.param.numel() // ref.param.shape[0]
        sizes[(ref.name, ref.expert)] = n
    return sum(sizes.values())


def estimate_memory(cfg: Any, model: str | None = None) -> MemoryEstimate:
    """Memory of running `cfg` (an UnlearnConfig) on one device; `model` overrides cfg.model.path."""
    name = model or cfg.model.path
    if not name:
        raise UserError("set model.path: the memory estimate needs the model's geometry")
    trust = cfg.model.trust_remote_code
    config = model_config(str(name), trust_remote_code=trust)
    net = meta_model(config, trust_remote_code=trust)
    layers = moe_layers(net)
    method = METHODS.get(cfg.method)(cfg.section(cfg.method))
    adapters = [ADAPTERS.get(a)(cfg.section(a)) for a in cfg.adapters]
    b = DTYPE_BYTES[cfg.model.dtype]
    params = sum(p.numel() for p in net.parameters())
    trainable = _trainable(cfg, net, method, adapters)
    d = int(config.hidden_size)
    k = layers[0].top_k
    f = sum(p.numel() for p in layers[0].experts.parameters()) // (layers[0].num_experts * 3 * d)  # gate, up, down
    vocab = int(config.vocab_size)
    n_layers = int(config.num_hidden_layers)
    batch = cfg.data.batch_size + (cfg.data.retain_batch_size if cfg.data.retain is not None else 0)
    batch += sum(a.extra_rows() for a in adapters)
    tokens = batch * cfg.data.max_length
    activations = n_layers * tokens * b * (16 * d + 4 * k * f) + tokens * vocab * 8
    adapter_bytes = sum(a.estimate_bytes(layers) for a in adapters)
    uses_reference = method.uses_reference() or any(a.needs_reference for a in adapters)
    return MemoryEstimate(
        model=str(name), dtype=cfg.model.dtype, params=params, trainable=trainable, weights=params * b,
        gradients=trainable * b, optimizer=2 * trainable * b, reference=trainable * b if uses_reference else 0,
        activations=activations, tokens_per_step=tokens, adapters=adapter_bytes,
    )
