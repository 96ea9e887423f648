"""Memory figures: NPO vs GA peak memory of a training step, SEUF optimizer state vs its slices.

Peak memory of a step = bytes alive when the step starts (weights, optimizer state, kept
reference values, NPO's precomputed reference log-probs, ...; the previous step's gradients are
cleared first, as the step itself does before its backward) + the largest growth during the
step. On CUDA that is torch.cuda.max_memory_allocated. On CPU, where torch keeps no allocator
statistics, `StepMemory` counts it: every tensor storage alive at the start (found by the
garbage collector) plus every NEW storage an op creates inside a TorchDispatchMode (a view of,
or an in-place update on, a storage that existed at the start is not new), released when it
dies (weak storage references), so the count follows the same allocations the CUDA allocator
would see (forward, autograd backward, optimizer), minus allocator caching.
"""

from __future__ import annotations

import gc
from typing import Any, Callable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.common import Env, Figure, sig
from bench.session import trainer_for
from moe_unlearn.train.engine import Trainer, optimizer_state_bytes

WARMUP_STEPS = 2  # the optimizer state exists from the first step on


Storages = dict[int, tuple[StorageWeakRef, int]]  # data_ptr -> (weak ref, bytes)


def live_storages() -> Storages:
    """Every distinct tensor storage reachable from Python right now: data_ptr -> (weak ref, bytes)."""
    seen: Storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and not obj.is_meta:  # type(): no attribute hooks run
            st = obj.untyped_storage()
            try:
                ptr = st.data_ptr()
            except RuntimeError:  # a fake tensor (torch.compile's tracing, cached after it): no memory
                continue
            if ptr not in seen or seen[ptr][1] < st.nbytes():
                seen[ptr] = (StorageWeakRef(st), st.nbytes())
    return seen


def live_storage_bytes() -> int:
    """Bytes of every distinct tensor storage reachable from Python right now."""
    return sum(n for _, n in live_storages().values())


class StepMemory(TorchDispatchMode):
    """Peak bytes of storages created inside the mode while they are alive.

    Storages that existed before (`existing`: weights, optimizer state, ...; counted in the
    start bytes) are skipped when an op returns them again: a view of a weight, an in-place
    update of a moment. Without that, every view of a parameter would count the parameter once
    more for the rest of the step. `current` may over-count storages that died since the last
    sweep; a sweep (dropping dead ones) runs whenever `current` would set a new peak, so `peak`
    is exact.
    """

    def __init__(self, existing: dict[int, tuple[StorageWeakRef, int]] | None = None) -> None:
        super().__init__()
        self.existing = dict(existing or {})
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _sweep(self) -> None:
        dead = [k for k, (ref, _) in self.live.items() if ref.expired()]
        for k in dead:
            self.current -= self.live.pop(k)[1]

    def _is_existing(self, key: int) -> bool:
        before = self.existing.get(key)
        if before is None:
            return False
        if before[0].expired():  # freed since, and the address reused by a new storage
            del self.existing[key]
            return False
        return True

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            key, old = st.data_ptr(), self.live.get(st.data_ptr())
            if st.nbytes() and (old is None or old[0].expired()) and not self._is_existing(key):
                if old is not None:
                    self.current -= old[1]
                self.live[key] = (StorageWeakRef(st), st.nbytes())
                self.current += st.nbytes()
        if self.current > self.peak:
            self._sweep()
            self.peak = max(self.peak, self.current)
        return out


def peak_bytes(step: Callable[[], Any], device: torch.device, besides: Storages | None = None) -> dict[str, int]:
    """{"start": bytes alive before the step, "peak": start + largest growth during it}.

    On CPU, storages in `besides` (a live_storages() taken before the measured loop was built)
    that are still alive are not counted: they belong to whatever else lives in the process (an
    earlier bench group, another test in the same worker), not to the loop."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return {"start": start, "peak": torch.cuda.max_memory_allocated(device)}
    existing = live_storages()
    others = {k for k, (ref, n) in (besides or {}).items()
              if k in existing and not ref.expired() and existing[k][1] == n}
    start = sum(n for k, (_, n) in existing.items() if k not in others)
    with StepMemory(existing) as mem:
        step()
    return {"start": start, "peak": start + mem.peak}


def trainer_peak(trainer: Trainer, *, keep_grads: bool = False, warmup: int = WARMUP_STEPS,
                 besides: Storages | None = None) -> dict[str, int]:
    """Peak of one step after the warm-up steps. The previous step's gradients are cleared first
    (the step would free them before its backward anyway); keep_grads=True measures as the bench
    did before, counting one extra gradient copy in the starting bytes."""
    for _ in range(warmup):
        trainer.step()
    if not keep_grads:
        trainer.optimizer.zero_grad(set_to_none=True)
    return peak_bytes(trainer.step, trainer.ctx.device, besides)


def method_peak(env: Env, method: str, overrides: list[str] | None = None, *, keep_grads: bool = False,
                adapters: list[str] | None = None) -> dict[str, int]:
    others = live_storages()
    trainer = trainer_for(env.manifest, env.work / f"memory-{method}", method, adapters or [], overrides)
    out = trainer_peak(trainer, keep_grads=keep_grads, besides=others)
    del trainer
    gc.collect()
    return out


def seuf_state(env: Env) -> Figure:
    trainer = trainer_for(env.manifest, env.work / "memory-seuf", "ga", ["seuf"])
    trainer.step()
    state = optimizer_state_bytes(trainer.optimizer)
    trained = sum(t.numel() * t.element_size() for t in trainer.trainable.leaves())
    fused = sum(s.param.numel() * s.param.element_size() for s in trainer.trainable.slices)
    detail = {"optimizer_state_bytes": state, "trained_bytes": trained,
              "fused_tensors_holding_the_slices_bytes": fused, "slices": len(trainer.trainable.slices)}
    return Figure("SEUF optimizer state / (2 x trained slice bytes)", sig(state / (2 * trained)), 1.05,
                  detail=detail)


def run(env: Env) -> list[Figure]:
    ga = method_peak(env, "ga")
    npo = method_peak(env, "npo")
    npo_forget_only = method_peak(env, "npo", ["npo.alpha=0"])
    ga_kept, npo_kept = method_peak(env, "ga", keep_grads=True), method_peak(env, "npo", keep_grads=True)
    mib = 1 / 2**20
    detail = {"method": "cuda.max_memory_allocated" if torch.cuda.is_available() else "live storages + dispatch-mode step peak",
              "ga_MiB": round(ga["peak"] * mib, 2), "npo_MiB": round(npo["peak"] * mib, 2),
              "ga_start_MiB": round(ga["start"] * mib, 2), "npo_start_MiB": round(npo["start"] * mib, 2),
              "npo_forget_only_ratio": round(npo_forget_only["peak"] / ga["peak"], 4),
              # as measured before issue 13: the previous step's gradients counted in the start bytes
              "previous_grads_kept": {"ga_MiB": round(ga_kept["peak"] * mib, 2), "npo_MiB": round(npo_kept["peak"] * mib, 2),
                                      "ratio": round(npo_kept["peak"] / ga_kept["peak"], 4)}}
    return [Figure("NPO peak memory / GA peak memory", sig(npo["peak"] / ga["peak"]), 1.2, detail=detail),
            seuf_state(env)]
