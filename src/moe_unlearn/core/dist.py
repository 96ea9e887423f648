"""Statistics across processes, in one place.

accelerate (DDP, FSDP2, DeepSpeed) starts the process group and moves gradients; the code that
computes a statistic over data (a Gram matrix, an attribution, a loss denominator, an eval
score) reduces it here. Every function is the identity in a single process, and nothing else
in the package asks how many processes run.

Data is split by rows: each global batch (the same batches one process would see with
batch_size x world) is cut into `world` contiguous row blocks, and every process runs one
forward per global batch, so sharded models (FSDP2, ZeRO-3), whose forwards are collective,
stay in step. A process whose block is empty runs a masked placeholder row (`shard_rows`).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from moe_unlearn.errors import RunFailure, UserError

PLACEHOLDER_INDEX = -1  # `index` of a placeholder row: belongs to no example
T = TypeVar("T")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _comm_device(t: torch.Tensor) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo takes CPU tensors."""
    backend = str(dist.get_backend())
    if "nccl" in backend and t.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    if "gloo" in backend and "nccl" not in backend and t.device.type != "cpu":
        return torch.device("cpu")
    return t.device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over processes of t (a new tensor on t's device; gradients do not flow)."""
    if world_size() == 1:
        return t.detach().clone()
    buf = t.detach().to(_comm_device(t), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def mean_over_processes(t: torch.Tensor) -> torch.Tensor:
    """The mean over processes of t (no gradient)."""
    return all_reduce_sum(t) / world_size()


def gather_objects(values: list[Any]) -> list[Any]:
    """Every process's list, concatenated in process order (a copy in a single process)."""
    if world_size() == 1:
        return list(values)
    parts: list[list[Any] | None] = [None] * world_size()
    dist.all_gather_object(parts, list(values))
    return [v for part in parts for v in part]  # type: ignore[union-attr]


def gather_rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """This process's row blocks of a sequence of global batches -> every process's rows, in the
    order one process would have them (batch by batch, process by process), on every process."""
    if world_size() == 1:
        return torch.cat(parts)
    device = parts[0].device
    per_process: list[list[torch.Tensor] | None] = [None] * world_size()
    dist.all_gather_object(per_process, [p.cpu() for p in parts])
    return torch.cat([blocks[b] for b in range(len(parts)) for blocks in per_process]).to(device)  # type: ignore[index]


def broadcast_object(value: Any) -> Any:
    """The main process's value, on every process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def decided_by_main(decide: Callable[[], T]) -> T:
    """decide() on the main process only; its result, or the error it raised, on every process.

    State that belongs to the whole run (its output dir's lock, the files in it) is judged once
    and in one place, so a process never races its own run's main process; the broadcast orders
    the others after the decision (a barrier, never timing). A user's mistake or a failed run
    reaches every process as the same one-line error; any other error stops them as a RunFailure.
    """
    if world_size() == 1:
        return decide()
    if not is_main():
        outcome, value = broadcast_object(None)
        if outcome == "error":
            raise value
        return value
    try:
        value = decide()
    except BaseException as e:
        told = e if isinstance(e, (UserError, RunFailure)) else RunFailure(f"the main process failed: {type(e).__name__}")
        broadcast_object(("error", told))
        raise
    broadcast_object(("ok", value))
    return value


def row_block(rows: int, *, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """[start, stop) of this process's contiguous block of `rows` rows (blocks of ceil(rows / world))."""
    r, w = rank() if rank_ is None else rank_, world_size() if world is None else world
    size = -(-rows // w)
    start = min(r * size, rows)
    return start, min(start + size, rows)


def shard_rows(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This process's block of rows of a collated global batch.

    An empty block becomes one placeholder row (row 0 with attention mask 0, labels -100 and
    index PLACEHOLDER_INDEX), so every process still runs the forward; routing captures and
    token statistics skip it because every one of its tokens is padding.
    """
    if world_size() == 1:
        return batch
    start, stop = row_block(int(batch["input_ids"].shape[0]))
    if stop > start:
        return {k: v[start:stop] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out = {k: v[:1].clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out["attention_mask"].zero_()
    if "labels" in out:
        out["labels"].fill_(-100)
    if "index" in out:
        out["index"].fill_(PLACEHOLDER_INDEX)
    return out
