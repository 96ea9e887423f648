"""GPU memory of an unlearning run, estimated without the weights.

The model is built from its config on the meta device (models/memory.py: shapes only, no memory),
so parameter counts are exact. One device, no sharding, no activation checkpointing. What each
term holds (bytes; P parameters, T trained, b bytes of model.dtype, s bytes of an AdamW moment):
  weights      P x b
  gradients    T x b                 (train.params, the method's own selection, or what an adapter
                                      that selects_trainable estimates; LoRA: not counted)
  optimizer    2 T x s               (s = b with train.optim_state_dtype: param, 4 with fp32)
  reference    T x b                 (the original trained values, where a method/adapter keeps them)
  adapters     what each adapter declares with estimate_bytes (GRIP: its bases, router rows and
               caches, in the router's dtype; it is given one retain batch's tokens)
  activations  what autograd keeps for backward, read from the model's own forward on the meta
               device (models/memory.py: saved_activation_bytes) with this run's parameters
               trained, times the rows forwarded with a graph in one micro-step (forget, retain
               when the method or an adapter runs it, an adapter's own sample). An adapter that
               selects what trains (SEUF) is placed at the middle MoE layer unless the caller knows
               the layer its data chose (selected_layer): only the layers from its layer up keep
               activations, so the guess is off by the activations of the layers between the two.
  logits       the loss's vocabulary-sized rows alive at the start of backward, when every saved
               activation still is (core/chunked.py; 4 bytes each, float32): a forward whose scored
               rows (at most rows x (seq - 1): the first token is never scored) fit one
               train.loss_chunk keeps its logits for backward; then the first backward loss node
               adds its gradient rows (a checkpointed chunk: its recomputed logits too). The
               model-dtype head output and the casts are freed before (a KL retain loss also holds
               the reference's float32 log-probabilities of its rows: not counted). loss_chunk 0
               (full logits): every forwarded token's, (b + 16)
  step buffer  AdamW's temporaries: none for the fused AdamW the engine runs where nothing shards
               (train/accel.py; it updates in place); torch's foreach AdamW (CUDA, under FSDP2 /
               ZeRO-3) one moment-sized copy of all T (T x s); its per-tensor AdamW (CPU) two of the
               largest trained tensor; the fp32-state AdamW one float32 copy of the largest
               (train/optim.py)
Peak = the larger of two moments: backward (weights, optimizer, reference, adapters, activations,
logits: the start of backward; each op then frees what it saved as it makes its gradients), plus
the gradients of earlier micro-steps when grad_accum > 1; with one micro-step gradients grow as
activations are freed, so the larger of the two) and the optimizer step (weights, optimizer,
reference, adapters, gradients, step buffer). Not counted: one layer's backward (or forward)
temporaries, a few [tokens x top-k, d] buffers (0.3-0.7 MiB, 2-9% of the peak, in
tests/train/test_memory_estimate.py), and what the caching allocator holds back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from moe_unlearn.adapters import ADAPTERS, Adapter
from moe_unlearn.errors import UserError
from moe_unlearn.methods import METHODS, Method
from moe_unlearn.models import moe_layers, select_parameters
from moe_unlearn.models.loading import check_routing
from moe_unlearn.models.memory import DTYPE_BYTES, GIB, meta_model, model_config, saved_activation_bytes
from moe_unlearn.train.config import run_needs

STATE_BYTES = {"fp32": 4}  # train.optim_state_dtype -> bytes per moment ("param": the model's dtype)


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
    logits: int = 0
    step_buffer: int = 0
    grad_accum: int = 1
    optim_state_dtype: str = "param"
    traced: bool = True  # activations read from the model's forward (False: the rough formula)

    @property
    def resident(self) -> int:
        return self.weights + self.optimizer + self.reference + self.adapters

    @property
    def backward_peak(self) -> int:
        graph = self.activations + self.logits
        return self.resident + (graph + self.gradients if self.grad_accum > 1 else max(graph, self.gradients))

    @property
    def step_peak(self) -> int:
        return self.resident + self.gradients + self.step_buffer

    @property
    def total(self) -> int:
        return max(self.backward_peak, self.step_peak)

    def rows(self) -> list[tuple[str, str]]:
        """(item, GiB) lines for printing: every term, each moment's sum, and the peak."""
        state = "float32" if self.optimizer == 8 * self.trainable else f"{self.dtype}, as the weights"
        how = "autograd's saved tensors" if self.traced else "rough formula"
        items = [("weights", self.weights), ("gradients", self.gradients),
                 (f"AdamW moments ({state})", self.optimizer),
                 ("reference copy", self.reference),
                 (f"activations ({how}, {self.tokens_per_step} tokens/micro-step)", self.activations),
                 ("logits (loss rows)", self.logits),
                 ("AdamW step buffer", self.step_buffer)]
        if self.adapters:
            items.append(("adapters (upper bound)", self.adapters))
        items += [("at backward", self.backward_peak), ("at the optimizer step", self.step_peak), ("total", self.total)]
        return [(name, f"{b / GIB:.1f} GiB") for name, b in items]


def _trained(cfg: Any, model: torch.nn.Module, method: Method, adapters: list[Adapter],
             layer: int | None = None) -> tuple[int, int, Callable[[str], bool]]:
    """(trained parameters, the largest trained tensor, which parameters carry gradients in the graph)."""
    layers = moe_layers(model)
    selected = [n for a in adapters if a.needs(a.cfg).selects_trainable and (n := a.estimate_trainable(layers)) is not None]
    if selected:  # an adapter that chooses what trains (SEUF): at `layer`, by default the middle MoE layer
        mid = layers[len(layers) // 2 if layer is None else layer]
        prefixes = (f"{mid.experts_name}.", f"{mid.router_name}.")
        return min(selected), min(selected), lambda name: name.startswith(prefixes)
    if cfg.train.lora is not None:
        return 0, 0, lambda name: True  # LoRA's adapters are small; every layer keeps its inputs for them
    refs = select_parameters(model, method.select_params(None, cfg.train.params) or cfg.train.params)
    sizes = {}
    for ref in refs:
        n = ref.param.numel() if ref.expert is None else ref.param.numel() // ref.param.shape[0]
        sizes[(ref.name, ref.expert)] = n
    names = {name for name, _ in sizes}
    return sum(sizes.values()), max(sizes.values(), default=0), names.__contains__


def _rough_activations(config: Any, layers: list, tokens: int, b: int) -> int:
    """The formula used when the model's code cannot run on meta tensors: L x N x b x (16 d + 4 k f)."""
    d, k = int(config.hidden_size), layers[0].top_k
    f = sum(p.numel() for p in layers[0].experts.parameters()) // (layers[0].num_experts * 3 * d)
    return int(config.num_hidden_layers) * tokens * b * (16 * d + 4 * k * f)


def _loss_logit_bytes(rows: list[int], seq: int, vocab: int, chunk: int) -> int:
    """float32 logit rows alive at the start of backward (chunked losses, core/chunked.py): each
    forward with a vocabulary loss (`rows` each) whose scored rows fit one chunk keeps them from
    its forward; the first loss node run in backward adds its gradient rows, and a checkpointed
    chunk (more scored rows than one chunk) its recomputed logits as well."""
    scored = [r * (seq - 1) for r in rows]  # every token but the first at most (text; QA scores its answers only)
    kept = sum(n for n in scored if n <= chunk)  # no recompute: the loss saved its float32 logits
    backward = max((n if n <= chunk else 2 * chunk) for n in scored)  # gradient rows (+ a recomputed chunk)
    return 4 * vocab * (kept + backward)


def estimate_memory(cfg: Any, model: str | None = None, *, device: str = "cuda", fused: bool = True,
                    selected_layer: int | None = None) -> MemoryEstimate:
    """Memory of running `cfg` (an UnlearnConfig) on one device; `model` overrides cfg.model.path.
    `fused`: the engine's fused AdamW (nothing sharded): no step buffer; False: torch's default,
    whose buffer depends on `device`: "cuda" (foreach) or "cpu" (per-tensor).
    `selected_layer`: the MoE layer (index) an adapter that selects what trains chose from the data
    (SEUF's target, known once it has prepared); None: the middle MoE layer, a guess."""
    name = model or cfg.model.path
    if not name:
        raise UserError("set model.path: the memory estimate needs the model's geometry")
    trust = cfg.model.trust_remote_code
    config = model_config(str(name), trust_remote_code=trust)
    net = meta_model(config, trust_remote_code=trust)
    check_routing(net, str(name))
    layers = moe_layers(net)
    method = METHODS.get(cfg.method)(cfg.section(cfg.method))
    adapters = [ADAPTERS.get(a)(cfg.section(a)) for a in cfg.adapters]
    b = DTYPE_BYTES[cfg.model.dtype]
    s = STATE_BYTES.get(cfg.train.optim_state_dtype, b)
    params = sum(p.numel() for p in net.parameters())
    trainable, largest, trains = _trained(cfg, net, method, adapters, selected_layer)
    needs = run_needs(method, adapters)
    rows = cfg.data.batch_size + (cfg.data.retain_batch_size if needs.retain_rows else 0) + needs.extra_rows
    seq = cfg.data.max_length
    tokens = rows * seq
    try:
        per_row = saved_activation_bytes(net, trains=trains, seq_len=seq, dtype=getattr(torch, cfg.model.dtype))
        activations, traced = rows * per_row, True
    except Exception:  # noqa: BLE001 - remote model code may read tensor values, which meta tensors lack
        activations = _rough_activations(config, layers, tokens, b)
        traced = False
    vocab, chunk = int(config.vocab_size), cfg.train.loss_chunk
    loss_rows = [cfg.data.batch_size] + ([cfg.data.retain_batch_size] if needs.retain_rows else [])
    logits = _loss_logit_bytes(loss_rows, seq, vocab, chunk) if chunk > 0 else tokens * vocab * (b + 16)
    if cfg.train.optim_state_dtype == "fp32":
        step_buffer = 4 * largest
    elif fused:
        step_buffer = 0
    else:
        step_buffer = trainable * s if device == "cuda" else 2 * largest * s
    net.to(getattr(torch, cfg.model.dtype))  # the trace left the meta model in bf16: adapters size the run's dtype
    batch_tokens = cfg.data.batch_size * seq  # one retain batch of an adapter's cache (GRIP's prepare)
    adapter_bytes = sum(a.estimate_bytes(layers, batch_tokens=batch_tokens) for a in adapters)
    uses_reference = needs.reference
    return MemoryEstimate(
        model=str(name), dtype=cfg.model.dtype, params=params, trainable=trainable, weights=params * b,
        gradients=trainable * b, optimizer=2 * trainable * s, reference=trainable * b if uses_reference else 0,
        activations=activations, tokens_per_step=tokens, adapters=adapter_bytes,
        logits=logits, step_buffer=step_buffer, grad_accum=cfg.train.grad_accum,
        optim_state_dtype=cfg.train.optim_state_dtype, traced=traced,
    )
