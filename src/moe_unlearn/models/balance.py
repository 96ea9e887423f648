"""The router load-balancing (Switch) loss, as a regulariser the engine can add explicitly."""

from __future__ import annotations

from typing import Sequence

import torch


def load_balancing_loss(router_logits: Sequence[torch.Tensor], num_experts: int, top_k: int,
                        attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Switch-Transformer load-balancing loss of one forward (one [B*S, E] logits tensor per MoE
    layer), padding excluded. transformers' own implementation, shared by its MoE classes."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    return load_balancing_loss_func(tuple(router_logits), num_experts, top_k, attention_mask)
