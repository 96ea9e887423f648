"""Whole values of parameters FSDP2 shards (DTensors).

GRIP edits router weights directly: it reads the whole [E, d] matrix, projects the update, and
writes it back. Routers are small, so the whole matrix is gathered on every process, every
process computes the same projected rows, and each keeps its own shard of the result.
Plain tensors pass through unchanged. (DeepSpeed ZeRO-3 partitions parameters outside torch's
tensor types; adapters that edit weights are refused there, see train/engine.py.)
"""

from __future__ import annotations

import torch


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether a distributed engine shards model's parameters (its forwards are then collective)."""
    return any(_is_dtensor(p) for p in model.parameters())


@torch.no_grad()
def full_tensor(param: torch.Tensor) -> torch.Tensor:
    """The whole value of `param` as a plain tensor on its device (a copy when it was sharded)."""
    if _is_dtensor(param):
        return param.full_tensor().detach().clone()
    return param.detach()


@torch.no_grad()
def assign_full(param: torch.Tensor, value: torch.Tensor) -> None:
    """Set the whole value of `param` (every process passes the same value; each keeps its shard)."""
    if _is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        shard = distribute_tensor(value.to(param.dtype), param.device_mesh, param.placements)
        param.to_local().copy_(shard.to_local())
    else:
        param.copy_(value.to(param.dtype))
