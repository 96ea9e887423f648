"""Which parameters train, and expert SLICES of fused [E, ...] tensors as their own leaves.

A fused expert tensor holds all E experts; training one expert (SEUF) must not give the
optimizer state for all E. Each slice gets a separate leaf tensor [...] that the optimizer
owns: after backward its grad is copied out of param.grad[e]; after the optimizer step its
value is written back into param.data[e]. Other slices stay bit-identical and optimizer
memory is proportional to the slice. Under FSDP2 the fused tensor is sharded by expert: the
slice's grad comes from the process that holds its row, every process keeps the same leaf, and
only the holder writes it back (core.sharded). Under DeepSpeed ZeRO-3, whose optimizer takes
module parameters only, slices become module parameters instead (core.slice_params).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from moe_unlearn.core.sharded import (
    gather_partitions, is_partitioned, is_sharded, local, reshard, row, set_row, shadow, unshadow,
)
from moe_unlearn.errors import UserError
from moe_unlearn.models import ParamRef, select_parameters


# A module's attribute naming its forward pre-hooks that read trained values (core.slice_params):
# under ZeRO-3 a reference forward's swap of the originals must run before them.
READS_TRAINED_VALUES = "_moe_unlearn_reads_trained_values"


@dataclass
class Slice:
    """One expert slice: param.data[expert] mirrored by the optimizer-owned `leaf`."""

    name: str
    param: nn.Parameter
    expert: int
    leaf: torch.Tensor


@dataclass
class Trainable:
    """Trainable state: whole parameters, expert slices, and (optionally) their original values."""

    full: dict[str, nn.Parameter]
    slices: list[Slice]
    originals: dict[str, torch.Tensor] = field(default_factory=dict)

    def leaves(self) -> list[torch.Tensor]:
        """What the optimizer updates: whole params, then slice leaves."""
        return [*self.full.values(), *(s.leaf for s in self.slices)]

    def rebind(self, model: nn.Module) -> None:
        """Point at `model`'s parameters of the same names (a sharding engine replaces them)."""
        params = dict(model.named_parameters())
        self.full = {name: params[name] for name in self.full}
        for s in self.slices:
            s.param = params[s.name]

    def trains(self, param: torch.Tensor) -> bool:
        """Whether `param` (or an expert slice of it) is trained."""
        return any(p is param for p in self.full.values()) or any(s.param is param for s in self.slices)

    def numel(self) -> int:
        return sum(t.numel() for t in self.leaves())

    def collect_slice_grads(self) -> None:
        """After backward: leaf.grad = param.grad[e]; the fused grads are then dropped."""
        for s in self.slices:
            g = s.param.grad
            s.leaf.grad = None if g is None else row(g, s.expert)
        for p in {id(s.param): s.param for s in self.slices}.values():
            p.grad = None

    @torch.no_grad()
    def write_back(self) -> None:
        """After the optimizer step: param.data[e] = leaf."""
        for s in self.slices:
            set_row(s.param, s.expert, s.leaf)

    @torch.no_grad()
    def read_back(self) -> None:
        """leaf = param[e] (after the model's shards were loaded)."""
        for s in self.slices:
            s.leaf.copy_(row(s.param, s.expert))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Trained values: whole params by name (this process's shard of a sharded one), slices
        as NAME@expert."""
        out = {name: local(p).detach() for name, p in self.full.items()}
        out.update({f"{s.name}@{s.expert}": s.leaf.detach() for s in self.slices})
        return out

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = set(self.state_tensors())
        if set(tensors) != expected:
            raise UserError("the checkpoint's trainable parameters differ from this config's; "
                            "resume with the config the run was started with")
        for name, p in self.full.items():
            p.copy_(tensors[name])
        for s in self.slices:
            s.leaf.copy_(tensors[f"{s.name}@{s.expert}"])
        self.write_back()

    def keep_originals(self) -> int:
        """Save a copy of every trained value (for ctx.reference()); returns its bytes. Of a
        sharded parameter only this process's shard is kept."""
        self.originals = {k: v.clone() for k, v in self.state_tensors().items()}
        return sum(t.numel() * t.element_size() for t in self.originals.values())

    @contextlib.contextmanager
    def swapped_to_originals(self, only: list[torch.Tensor] | None = None,
                             model: nn.Module | None = None) -> Iterator[None]:
        """Temporarily run with the original values (of the parameters in `only`, or all):
        `.data` pointers are swapped, never copied in place, so autograd graphs built before are
        untouched. A sliced fused tensor needs one transient copy of that tensor. A model FSDP2
        shards is written in place instead (see _written_originals), and a model ZeRO-3
        partitions runs each module with gathered originals (see _gathered_originals)."""
        if not self.originals:
            raise RuntimeError("reference requested but originals were not kept (a Needs record without reference=True)")
        if model is not None and is_partitioned(model):
            with self._gathered_originals(model, only):
                yield
            return
        if model is not None and is_sharded(model):
            with self._written_originals(model, only):
                yield
            return
        keep = None if only is None else {id(p) for p in only}
        saved: list[tuple[nn.Parameter, torch.Tensor]] = []
        try:
            for name, p in self.full.items():
                if keep is not None and id(p) not in keep:
                    continue
                saved.append((p, p.data))
                p.data = self.originals[name]
            for s in self.slices:
                if keep is not None and id(s.param) not in keep:
                    continue
                current = s.param.data
                swapped = current.clone()
                swapped[s.expert] = self.originals[f"{s.name}@{s.expert}"]
                saved.append((s.param, current))
                s.param.data = swapped
            yield
        finally:
            for p, data in reversed(saved):
                p.data = data

    @contextlib.contextmanager
    def _written_originals(self, model: nn.Module, only: list[torch.Tensor] | None) -> Iterator[None]:
        """FSDP2 gathers each forward's weights from the shards' storage, so the originals are
        copied into the shards and the current values copied back afterwards, each time with
        the model resharded. Autograd saved the gathered copies, not the shards, and backward
        gathers again after the restore: a graph built before sees its own values."""
        keep = None if only is None else {id(p) for p in only}
        current: list[tuple[torch.Tensor, torch.Tensor]] = []  # (shard, its current value)
        rows: list[Slice] = []  # a slice's current row is its leaf
        reshard(model)
        try:
            with torch.no_grad():
                for name, p in self.full.items():
                    if keep is None or id(p) in keep:
                        shard = local(p)
                        current.append((shard, shard.clone()))
                        shard.copy_(self.originals[name])
                for s in self.slices:
                    if keep is None or id(s.param) in keep:
                        rows.append(s)
                        set_row(s.param, s.expert, self.originals[f"{s.name}@{s.expert}"])
            yield
        finally:
            reshard(model)
            with torch.no_grad():
                for shard, value in current:
                    shard.copy_(value)
                for s in rows:
                    set_row(s.param, s.expert, s.leaf)

    @contextlib.contextmanager
    def _gathered_originals(self, model: nn.Module, only: list[torch.Tensor] | None) -> Iterator[None]:
        """ZeRO-3 gathers a module's parameters before its forward and releases them after, so
        the originals (this process's partitions) are gathered per module, by hooks that run
        after ZeRO-3's gathering and put the parameters back before its release. The forwards
        are no-grad reference forwards: nothing is saved for backward."""
        keep = None if only is None else {id(p) for p in only}
        names = {id(p): name for name, p in self.full.items() if keep is None or id(p) in keep}
        owners: dict[nn.Module, list[tuple[str, str]]] = {}  # module -> (its key, trained name)
        for module in model.modules():
            for key, p in module._parameters.items():
                if p is not None and id(p) in names:
                    owners.setdefault(module, []).append((key, names[id(p)]))

        def swap(module: nn.Module, args: Any) -> None:
            for key, name in owners[module]:
                param = module._parameters[key]
                shadow(module, key, gather_partitions(self.originals[name], param).to(param.dtype))
                saved.append((module, key))

        def restore(module: nn.Module, *args: Any) -> None:
            while saved and saved[-1][0] is module:
                unshadow(*saved.pop())

        saved: list[tuple[nn.Module, str]] = []
        handles = [h for m in owners for h in (m.register_forward_pre_hook(swap),
                                                m.register_forward_hook(restore, prepend=True, always_call=True))]
        for m in owners:  # pre-hooks that read trained values (slice composition) run after the swap
            for hook_id in m.__dict__.get(READS_TRAINED_VALUES, ()):
                m._forward_pre_hooks.move_to_end(hook_id)
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for module, key in reversed(saved):
                unshadow(module, key)


def split_refs(refs: list[ParamRef]) -> Trainable:
    """Freeze nothing yet; turn refs into whole params + slices (a whole param absorbs its slices)."""
    full = {r.name: r.param for r in refs if r.expert is None}
    slices: dict[tuple[str, int], Slice] = {}
    for r in refs:
        if r.expert is None or r.name in full or (r.name, r.expert) in slices:
            continue
        leaf = r.param.detach()[r.expert].clone().requires_grad_(True)
        slices[(r.name, r.expert)] = Slice(r.name, r.param, r.expert, leaf)
    return Trainable(full, sorted(slices.values(), key=lambda s: (s.name, s.expert)))


def freeze_all_but(model: nn.Module, trainable: Trainable) -> None:
    """requires_grad only on whole trained params and the fused tensors holding slices."""
    keep = {id(p) for p in trainable.full.values()} | {id(s.param) for s in trainable.slices}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


def select_refs(model: nn.Module, specs: list[str]) -> list[ParamRef]:
    """select_parameters with a clear error when nothing matches."""
    refs = select_parameters(model, specs)
    if not refs:
        raise UserError(f"parameter selectors {specs} match nothing in this model; see 'moe-unlearn inspect'")
    return refs
