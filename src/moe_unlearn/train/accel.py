"""accelerate glue: the run's Accelerator and what the sharding engines (FSDP2, ZeRO-3) need
around the loop. The loop itself (train/engine.py) asks only `is_sharded` and calls these.

FSDP runs as version 2 and DeepSpeed as ZeRO-3 (the tested engines). Models load whole in
every process; preparation runs on them before accelerate shards them. Expert slices are not
model parameters: under FSDP2 they pass accelerate's prepare and save/load_state as the fused
tensors they live in (`prepare`, `slices_apart`); under ZeRO-3 they become module parameters
of their own (core.slice_params).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType

from moe_unlearn.core import slice_params
from moe_unlearn.core.context import ForwardOut
from moe_unlearn.core.dist import barrier
from moe_unlearn.core.trainable import Trainable
from moe_unlearn.errors import UserError
from moe_unlearn.models import resolve_device
from moe_unlearn.train.config import TrainConfig, UnlearnConfig
from moe_unlearn.train.optim import build_optimizer, build_scheduler

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # train.precision -> accelerate's mixed_precision
SHARDED_ENGINES = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def make_accelerator(device: str = "auto", precision: str = "fp32", grad_accum: int = 1, *,
                     log_with: list[str] | None = None, project_dir: Path | None = None) -> Accelerator:
    """The run's Accelerator: device, mixed precision (train.precision), gradient accumulation and
    the experiment trackers (train.log_with, writing below project_dir).

    accelerate keeps one process-wide state; in a single process (the demo runs many jobs, with
    any precision) each run starts from a fresh state, while under a launcher (torchrun,
    accelerate launch) the launcher's state is the run's.
    """
    dev = resolve_device(device)
    if precision == "fp16" and dev.type != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA device (fp16 on CPU is not supported); use bf16 or fp32")
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return Accelerator(
        cpu=dev.type == "cpu",
        mixed_precision=PRECISION[precision],
        gradient_accumulation_steps=grad_accum,
        step_scheduler_with_optimizer=False,  # one scheduler step per optimizer step, whatever the world size
        log_with=log_with or None,
        project_dir=str(project_dir) if project_dir is not None else None,
    )


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether a sharding engine (FSDP2, ZeRO-3) holds the model."""
    return accelerator.distributed_type in SHARDED_ENGINES


def fit_config(cfg: UnlearnConfig, accelerator: Accelerator) -> UnlearnConfig:
    """The config a sharding engine runs: full logits (its LM head is resharded after each forward)."""
    if not is_sharded(accelerator):
        return cfg
    return replace(cfg, train=replace(cfg.train, loss_chunk=0), eval=replace(cfg.eval, loss_chunk=0))


@contextlib.contextmanager
def whole_model_loading(accelerator: Accelerator) -> Iterator[None]:
    """Models load whole in every process: preparation runs on them before accelerate shards
    them. Under DeepSpeed, accelerate registers its config with transformers, which would
    partition the weights while they load (deepspeed.zero.Init); it is unregistered meanwhile."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        accelerator.state.deepspeed_plugin.set_deepspeed_weakref()


def check_engine(accelerator: Accelerator) -> None:
    """Refuse what a sharding engine cannot run (before accelerate's prepare). FSDP runs as
    version 2 and DeepSpeed as ZeRO-3 (the tested engines). FSDP2 runs everything (whole
    values, rows and in-place writes through core.sharded); so does ZeRO-3: adapters that write
    weights (GRIP) through GatheredParameters, expert slices (SEUF, expert:L:E) as module
    parameters of their own (core.slice_params), references from gathered original partitions
    (core.trainable)."""
    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise UserError("moe-unlearn runs FSDP version 2 (fsdp_version: 2 in the accelerate config)")
    if kind != DistributedType.DEEPSPEED:
        return
    if accelerator.state.deepspeed_plugin.zero_stage != 3:
        raise UserError("moe-unlearn runs DeepSpeed with ZeRO stage 3 (zero_stage: 3 in the accelerate config); "
                        "without sharding, use DDP (configs/accelerate/multi_gpu_ddp.yaml)")


def prepare(accelerator: Accelerator, model: torch.nn.Module, trainable: Trainable, cfg: TrainConfig, total: int,
            batch_size: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, list[slice_params.SlicedTensor]]:
    """The engine checked, then accelerate's prepare of the model, the optimizer over
    trainable.leaves() and its schedule (DeepSpeed reads the per-process batch from its config:
    no data loader goes through prepare); also ZeRO-3's expert slices as parameters of their own.

    FSDP2's prepare re-points the optimizer at the sharded model's parameters, matched by
    storage; expert-slice leaves are not model parameters, so the optimizer goes through it
    holding the fused tensors the slices live in and holds the leaves afterwards (its state is
    created at the first step: for the slices only).
    """
    check_engine(accelerator)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    # ZeRO-3's optimizer takes module parameters only: expert slices become parameters of their own
    slices = slice_params.register(model, trainable) if deepspeed else []
    leaves_later = accelerator.distributed_type == DistributedType.FSDP and bool(trainable.slices)
    fused = list({id(s.param): s.param for s in trainable.slices}.values())
    # fused AdamW where nothing shards: FSDP2 hands it DTensors, ZeRO-3 its own flat partitions
    optimizer = build_optimizer(cfg, [*trainable.full.values(), *fused] if leaves_later else trainable.leaves(),
                                fused=not is_sharded(accelerator))
    scheduler = build_scheduler(cfg, optimizer, total)
    if deepspeed:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = batch_size
        ds["gradient_clipping"] = cfg.max_grad_norm or 0.0  # DeepSpeed clips inside its step
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    trainable.rebind(accelerator.unwrap_model(model))  # FSDP2 replaces parameters by DTensors
    if leaves_later:
        optimizer.param_groups[0]["params"] = trainable.leaves()
        optimizer.state.clear()  # no step yet; prepare left empty entries for the fused tensors
    slice_params.bind(slices)
    return model, optimizer, scheduler, slices


@contextlib.contextmanager
def slices_apart(optimizer: torch.optim.Optimizer, trainable: Trainable) -> Iterator[dict[str, dict[str, Any]]]:
    """accelerate's sharded optimizer state (save_state / load_state under FSDP2) knows model
    parameters only, so inside this block the optimizer holds the whole trained parameters
    alone. The yielded dict maps each expert slice (NAME@expert) to its optimizer state, the
    same on every process: read it to save, fill it to load. Afterwards the leaves are back in
    the optimizer with that state. Without slices the optimizer is left alone (DeepSpeed's
    param groups hold its own flat partitions, not model parameters)."""
    if not trainable.slices:
        yield {}
        return
    keys = {id(s.leaf): f"{s.name}@{s.expert}" for s in trainable.slices}
    state = {keys[id(p)]: optimizer.state.pop(p) for p in trainable.leaves() if id(p) in keys and p in optimizer.state}
    optimizer.param_groups[0]["params"] = list(trainable.full.values())
    try:
        yield state
    finally:  # load_state replaces the param group: set the one the optimizer has now
        optimizer.param_groups[0]["params"] = trainable.leaves()
        for s in trainable.slices:
            if f"{s.name}@{s.expert}" in state:
                optimizer.state[s.leaf] = {k: v.to(s.leaf.device) if torch.is_tensor(v) and v.dim() else v
                                           for k, v in state[f"{s.name}@{s.expert}"].items()}


def save_sharded(accelerator: Accelerator, optimizer: torch.optim.Optimizer, trainable: Trainable,
                 folder: Path) -> dict[str, dict[str, Any]]:
    """Every process writes its model and optimizer shards into folder (accelerate's save_state);
    returns the expert slices' optimizer state, which the checkpoint keeps itself."""
    with slices_apart(optimizer, trainable) as slice_state:
        accelerator.save_state(str(folder))
    barrier()  # every process's files are written before the folder is moved into place
    return slice_state


def load_sharded(accelerator: Accelerator, optimizer: torch.optim.Optimizer, trainable: Trainable, folder: Path,
                 slice_state: dict[str, dict[str, Any]]) -> None:
    """The shards save_sharded wrote, and the expert slices' optimizer state, back in place."""
    with slices_apart(optimizer, trainable) as state:
        accelerator.load_state(str(folder))
        state.update(slice_state)
    trainable.read_back()


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module,
                    slices: list[slice_params.SlicedTensor]) -> dict[str, torch.Tensor] | None:
    """The model's whole tensors on the main process under FSDP2 / ZeRO-3 (None elsewhere under
    DeepSpeed); ZeRO-3's expert slices folded back into their rows, without names of their own."""
    slice_params.fold(slices)
    state = accelerator.get_state_dict(model)
    if state is not None and slices:
        own = slice_params.slice_names(slices)
        state = {k: v for k, v in state.items() if k not in own}
    return state


def output_anchor(forwards: Iterable[ForwardOut]) -> torch.Tensor | float:
    """0 x the sum of every training forward's output, for sharding engines. FSDP2 (and ZeRO-3)
    gather a decoder layer's weights for backward when the gradient of the layer's OUTPUT
    arrives; a loss on a value inside a layer (keep_routing's router logits, the load-balancing
    loss) of a forward whose output feeds no loss (GA's retain forward) would reach weights
    already freed. With this, every forward's gradient enters its layers from the top; it adds
    nothing to the loss or to any gradient."""
    outputs = [f.lm.logits if f.lm.logits is not None else f.lm.hidden for f in forwards]
    return sum((0.0 * x.sum() for x in outputs if x is not None and x.requires_grad), 0.0)
