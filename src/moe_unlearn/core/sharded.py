"""Whole values, rows and in-place writes of parameters FSDP2 shards (DTensors).

FSDP2 keeps each parameter as a DTensor sharded on dim 0 (each process holds a chunk of the
rows) and all-gathers the whole value for a forward. Two rules follow for code that reads or
writes weights outside the optimizer:
- writes go into the local shard, in place (FSDP2 gathers from the shard's storage, so a
  swapped `.data` would be ignored);
- the model must be resharded first (`reshard`): the root module keeps its gathered copy after
  a forward, and a forward that reuses that copy would not see the write.

GRIP gathers whole router matrices (small) and writes them back; SEUF's expert slices are one
row of a fused [E, ...] tensor, held by one process and broadcast from there. Plain tensors
pass through unchanged.

DeepSpeed ZeRO-3 partitions a parameter outside torch's tensor types (the tensor is an empty
placeholder, `ds_id` marks it): its whole value is read and written inside
GatheredParameters, and a write also goes to the optimizer's fp32 master copy, which would
otherwise overwrite it at the next step; a copy of this process's partition (`local`) is
gathered back into a whole value with `gather_partitions`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from moe_unlearn.core.dist import world_size


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _is_partitioned(t: torch.Tensor) -> bool:
    return hasattr(t, "ds_id")  # a DeepSpeed ZeRO-3 parameter


def is_sharded(model: nn.Module) -> bool:
    """Whether a distributed engine shards model's parameters (its forwards are then collective)."""
    return any(_is_dtensor(p) or _is_partitioned(p) for p in model.parameters())


def runs_whole(model: nn.Module) -> bool:
    """Whether every forward of model must run to its end: several processes (DDP's reducer) or
    sharded parameters (each layer's gather is collective) expect whole forwards in every process."""
    return world_size() > 1 or is_sharded(model)


def is_partitioned(model: nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 partitions model's parameters."""
    return any(_is_partitioned(p) for p in model.parameters())


def reshard(model: nn.Module) -> None:
    """Drop every gathered copy of FSDP2 parameters, so the next forward gathers the shards
    (and sees what was written into them); a no-op for a model FSDP2 does not shard."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


@torch.no_grad()
def full_tensor(param: torch.Tensor) -> torch.Tensor:
    """The whole value of `param` as a plain tensor on its device (a copy when it was sharded)."""
    if _is_dtensor(param):
        return param.full_tensor().detach().clone()
    if _is_partitioned(param):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            return param.detach().clone()
    return param.detach()


@torch.no_grad()
def assign_full(param: torch.Tensor, value: torch.Tensor) -> None:
    """Set the whole value of `param` (every process passes the same value; each keeps its shard)."""
    if _is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        shard = distribute_tensor(value.to(param.dtype), param.device_mesh, param.placements)
        param.to_local().copy_(shard.to_local())
    elif _is_partitioned(param):
        import deepspeed
        import torch.distributed as dist
        from deepspeed.utils import safe_set_full_fp32_param

        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):  # rank 0's value is partitioned on exit
            if dist.get_rank() == 0:
                param.copy_(value.to(param.dtype))
        if getattr(param, "_z3_optimizer", None) is not None:  # trained: the fp32 master copy too
            safe_set_full_fp32_param(param, value.float())
    else:
        param.copy_(value.to(param.dtype))


def local(param: torch.Tensor) -> torch.Tensor:
    """What this process holds of `param`: its shard of a DTensor, its partition of a ZeRO-3
    parameter, else the tensor itself."""
    if _is_dtensor(param):
        return param.to_local()
    return param.ds_tensor if _is_partitioned(param) else param


def gather_partitions(part: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The whole value whose ZeRO-3 partitions, laid out as `param`'s, are `part` on every
    process (each its own): ZeRO-3 cuts the flattened tensor, padded, into one contiguous
    chunk per process in rank order."""
    import torch.distributed as dist

    group = param.ds_process_group
    part = part.to(param.device).contiguous()  # from host memory when ZeRO-3 offloads parameters
    parts = [torch.empty_like(part) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, part, group=group)
    return torch.cat(parts)[: param.ds_numel].view(param.ds_shape)


def shadow(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Make `module.<name>` read `value` for a while, its parameter left in place: an instance
    attribute wins over nn.Module's parameter lookup, while engines that walk `_parameters`
    (ZeRO-3's release, which reads each parameter's ds_id) still find their own."""
    module.__dict__[name] = value


def unshadow(module: nn.Module, name: str) -> None:
    """`module.<name>` reads its parameter again."""
    module.__dict__.pop(name, None)


def _held_rows(t: torch.Tensor) -> tuple[int, int] | None:
    """[start, stop) of the dim-0 rows this process holds when `t` is a DTensor sharded on dim 0
    over a 1-D mesh (FSDP2's layout: torch.chunk, ceil(n / world) rows per process); None for
    any other layout."""
    from torch.distributed.tensor import Shard

    if t.device_mesh.ndim != 1 or tuple(t.placements) != (Shard(0),):
        return None
    n, world = t.shape[0], t.device_mesh.size()
    chunk = math.ceil(n / world)
    start = min(t.device_mesh.get_local_rank() * chunk, n)
    stop = min(start + chunk, n)
    if t.to_local().shape[0] != stop - start:
        return None
    return start, stop


@torch.no_grad()
def row(t: torch.Tensor, i: int) -> torch.Tensor:
    """Row i of `t` as a plain tensor on every process (a copy). Of a dim-0-sharded DTensor only
    that row travels: its holder contributes it to one sum over the mesh."""
    if not _is_dtensor(t):
        return t.detach()[i].clone()
    held = _held_rows(t)
    if held is None:
        return t.full_tensor()[i].clone()
    import torch.distributed as dist

    start, stop = held
    shard = t.to_local()
    out = torch.zeros(t.shape[1:], dtype=shard.dtype, device=shard.device)
    if start <= i < stop:
        out.copy_(shard[i - start])
    dist.all_reduce(out, group=t.device_mesh.get_group())
    return out


@torch.no_grad()
def set_row(t: torch.Tensor, i: int, value: torch.Tensor) -> None:
    """t[i] = value in place (every process passes the same value; only the row's holder writes)."""
    if not _is_dtensor(t):
        t.detach()[i].copy_(value)
        return
    held = _held_rows(t)
    if held is None:
        whole = t.full_tensor()
        whole[i] = value
        assign_full(t, whole)
        return
    start, stop = held
    if start <= i < stop:
        t.to_local()[i - start].copy_(value)
