"""Shared inputs for the model-layer tests: a right-padded batch and fused-expert zeroing."""

from __future__ import annotations

import torch
from torch import nn

from moe_unlearn.models.layout import MoELayer


def padded_batch(batch: int = 3, seq: int = 10, vocab: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, S] and a right-padding attention_mask [B, S] with rows of different length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    lengths = torch.tensor([seq, seq - 4, seq - 7][:batch])
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


def zero_expert(layer: MoELayer, expert: int) -> None:
    """Zero every fused [E, ...] tensor of `layer`'s experts at `expert` (in place)."""
    with torch.no_grad():
        for p in layer.experts.parameters():
            if p.shape[0] == layer.num_experts:
                p[expert] = 0


def actual_selections(model: nn.Module, layers: list[MoELayer], run) -> list[list[torch.Tensor]]:
    """Per layer, the [T, k] expert indices the model really used, read by our own hooks.

    The experts pre-hook sees top_k_index; a dense-score router (Llama4) returns scores that
    are non-zero exactly at the selected experts. Independent of moe_unlearn.models.routing.
    """
    seen: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = []
    for layer in layers:
        if layer.rule.selection == "router_scores":
            def hook(m, a, out, i=layer.index, k=layer.top_k):
                nonzero = out[0] != 0
                seen[i].append(nonzero.nonzero()[:, 1].reshape(-1, k))
            handles.append(layer.router.register_forward_hook(hook))
        else:
            handles.append(layer.experts.register_forward_pre_hook(
                lambda m, a, i=layer.index: seen[i].append(a[1].detach().clone())))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen
