"""Run under `torchrun --nproc_per_node 2`: GRIP's projection on routers that FSDP2 shards.

accelerate enables FSDP on CUDA devices only, so this drives torch's fully_shard (what
accelerate's FSDP2 applies per decoder layer) directly on CPU/gloo. Every process prepares GRIP
on its rows of the retained batches (Gram matrices summed over processes), the decoder layers
are then sharded, the routers take the same raw update, and GRIP projects it through
core.sharded. Writes {"ok": ..., details} as JSON to argv[1] from the main process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from moe_unlearn.adapters.grip import Grip, GripConfig, router_rows
from moe_unlearn.adapters.nullspace import project_rows
from moe_unlearn.core.dist import rank, shard_rows
from moe_unlearn.core.sharded import assign_full, full_tensor
from moe_unlearn.models import moe_layers, tiny_model

torch.set_num_threads(1)
dist.init_process_group("gloo")


def batches(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(3, 250, (4, 12), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
                    "index": torch.arange(4 * i, 4 * i + 4)})
    return out


class Ctx(SimpleNamespace):
    def iter_split(self, role, batch_size=None):
        yield from (shard_rows(b) for b in self.splits[role])


model = tiny_model("olmoe", seed=0)
ctx = Ctx(model=model, layers=moe_layers(model), splits={"retain": batches(6, seed=1)}, out_dir=Path("."),
          cfg=SimpleNamespace(seed=0), device=torch.device("cpu"), step=0, trainable=None)
grip = Grip(GripConfig(mode="project", rel_energy=1e-6, cache_tokens=10_000))
grip.prepare(ctx)  # on the unsharded model, this process's rows
old = [router_rows(layer) for layer in ctx.layers]

for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
sharded = all(isinstance(layer.router_weight, DTensor) for layer in ctx.layers)

g = torch.Generator().manual_seed(7)  # the same raw update on every process
deltas = [torch.randn(o.shape, generator=g) * 0.1 for o in old]
for layer, o, d in zip(ctx.layers, old, deltas):
    assign_full(layer.router_weight, o + d)
ctx.step = 1
grip.after_step(ctx)

errors, moved = [], []
for layer, state, o, d in zip(ctx.layers, grip.layers, old, deltas):
    got = full_tensor(layer.router_weight)
    want = o + project_rows(d, state.bases.basis)
    errors.append(float((got - want).abs().max()))
    moved.append(float((got - o).abs().max()))
    local = layer.router_weight.to_local()
    rows = torch.chunk(got, dist.get_world_size())[rank()]
    errors.append(float((local - rows).abs().max()))
gathered = [None, None]
dist.all_gather_object(gathered, [full_tensor(layer.router_weight) for layer in ctx.layers])
same = all(torch.equal(a, b) for a, b in zip(*gathered))
if rank() == 0:
    Path(sys.argv[1]).write_text(json.dumps({"sharded": sharded, "max_error": max(errors), "moved": min(moved),
                                             "same_on_every_process": same}))
dist.destroy_process_group()
