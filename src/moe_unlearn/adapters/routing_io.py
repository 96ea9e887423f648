"""Small no-grad passes the adapters share: retained caches, router inputs, routing statistics.

All of them run the model directly (not ctx.forward): they measure the model, they are not
training forwards, so no adapter hook or token weighting may fire. Batches come from
ctx.iter_split (this process's rows); every statistic here is summed over processes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterable

import torch

from moe_unlearn.core import chunked, losses
from moe_unlearn.core.dist import all_reduce_sum
from moe_unlearn.core.sharded import runs_whole
from moe_unlearn.models.decoder import stop_after
from moe_unlearn.models.routing import capture_routing
from moe_unlearn.vocab import Batch

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from moe_unlearn.core.context import RunContext
    from moe_unlearn.models.layout import MoELayer
    from moe_unlearn.models.routing import RoutingCapture


def run(model: nn.Module, batch: Batch) -> None:
    """One plain forward for its routing or router inputs: no labels (no aux loss), no logits."""
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
          **chunked.no_logits(model, batch["input_ids"].device))


def retain_batches(ctx: RunContext, tokens: int, check: int) -> tuple[list[Batch], list[Batch], bool]:
    """(cache batches holding >= `tokens` retain tokens, `check` batches, whether those are held out).

    The check batches come from the END of the retain split and are left out of the cache when
    the split has more than `check` batches; otherwise they are the cache's last batches.
    """
    batches = list(ctx.iter_split("retain"))
    heldout = check > 0 and len(batches) > check
    pool = batches[:-check] if heldout else batches
    cache, seen = [], 0
    for batch in pool:
        if seen >= tokens:
            break
        cache.append(batch)
        seen += int(all_reduce_sum(batch["attention_mask"].sum()))  # every process's rows of this batch
    return cache, (batches[-check:] if check else []), heldout


@torch.no_grad()
def layer_inputs(model: nn.Module, layers: list[MoELayer], batch: Batch) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{layer index: (router inputs [T, d], top-k indices [T, k])} of ONE batch, listed layers only.

    T = the batch's non-padding tokens. Only the listed layers' inputs are kept (not every
    layer's, as `capture_routing(router_inputs=True)` would), and the forward stops after the
    last listed MoE block, so a pass for early layers costs a fraction of a forward.
    """
    inputs: dict[int, torch.Tensor] = {}
    handles = [layer.router.register_forward_pre_hook(
        lambda m, a, i=layer.index: inputs.setdefault(i, a[0].reshape(-1, a[0].shape[-1]))) for layer in layers]
    last = max(layers, key=lambda layer: layer.index).block
    try:
        with capture_routing(model) as cap, contextlib.nullcontext() if runs_whole(model) else stop_after(last):
            run(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    mask = cap.calls[0].mask
    out = {}
    for layer in layers:
        x = inputs[layer.index]
        out[layer.index] = (x if mask is None else x[mask.to(x.device)], cap.call_routing(0, layer.index).indices)
    return out


def selection_mask(indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """top-k indices [T, k] -> bool [T, E]."""
    mask = torch.zeros(indices.shape[0], num_experts, dtype=torch.bool, device=indices.device)
    return mask.scatter_(1, indices.long(), True)


@torch.no_grad()
def capture(model: nn.Module, batches: Iterable[Batch]) -> RoutingCapture:
    """The routing (no inputs) of plain forwards over the batches."""
    with capture_routing(model) as cap:
        for batch in batches:
            run(model, batch)
    return cap


def frequencies(cap: RoutingCapture) -> list[torch.Tensor]:
    """Per layer [E] float64: share of every process's captured tokens routed to each expert."""
    tokens = float(all_reduce_sum(torch.tensor(float(cap.tokens), dtype=torch.float64)))
    return [all_reduce_sum(cap.counts(layer).double().cpu()) / max(tokens, 1.0) for layer in range(len(cap.num_experts))]


@torch.no_grad()
def retain_nll(model: nn.Module, batches: list[Batch], chunk: int) -> float:
    """Mean answer-token NLL over the batches, all processes (the utility check of a router refit);
    `chunk`: answer rows per vocabulary-sized chunk (train.loss_chunk)."""
    total = torch.zeros(2, dtype=torch.float64)
    for batch in batches:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        ce = losses.token_ce(chunked.lm_forward(model, inputs, chunk=chunk)[1], batch["labels"])
        mask = losses.answer_mask(batch["labels"])
        total += torch.tensor([float((ce * mask).sum()), float(mask.sum())], dtype=torch.float64)
    nll_sum, count = all_reduce_sum(total).tolist()
    return nll_sum / max(count, 1.0)
