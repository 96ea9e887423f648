"""AdamW (moments in the parameters' dtype, or in float32) and the learning-rate schedule
(linear warmup, then constant / linear / cosine decay)."""

from __future__ import annotations

import math

import torch

from moe_unlearn.train.config import TrainConfig


def total_steps(cfg: TrainConfig, forget_examples: int, batch_size: int) -> int:
    """Optimizer steps: train.max_steps if set, else epochs over the forget set."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    per_step = batch_size * cfg.grad_accum
    return max(1, math.ceil(cfg.epochs * forget_examples / per_step))


class AdamWFp32State(torch.optim.AdamW):
    """AdamW whose moments are float32 whatever the parameters' dtype (`train.optim_state_dtype:
    fp32`), as bitsandbytes' paged_adamw_32bit keeps them for bf16 weights: the update is computed
    in float32 and rounded into the parameter once. Per parameter, one float32 buffer of its size
    exists during the step (torch's foreach AdamW holds one of ALL trained parameters at once).
    Same hyper-parameters and schedule as torch.optim.AdamW (no amsgrad, no maximize).
    """

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                # m / (sqrt(v / bc2) + eps) in ONE float32 buffer, then the new value in it
                update = v.sqrt().div_(math.sqrt(1 - beta2**t)).add_(eps).reciprocal_().mul_(m)
                update.mul_(-lr / (1 - beta1**t)).add_(p, alpha=1 - lr * wd)
                p.copy_(update)
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """torch casts loaded moments to the parameters' dtype; keep them float32 (exact resume)."""
        super().load_state_dict(state_dict)
        saved = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved, params):
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state_dict["state"].get(i, {}):
                    self.state[p][key] = state_dict["state"][i][key].to(device=p.device, dtype=torch.float32)


# train.optim_state_dtype -> the AdamW class that keeps its moments in that dtype
OPTIMIZERS: dict[str, type[torch.optim.AdamW]] = {"param": torch.optim.AdamW, "fp32": AdamWFp32State}


def build_optimizer(cfg: TrainConfig, params: list[torch.Tensor], *, fused: bool = False) -> torch.optim.AdamW:
    """The run's AdamW. `fused`: torch's fused kernel (one pass over each tensor, no temporaries)
    for moments in the parameters' dtype, where torch would pick its per-tensor loop (CPU) or
    foreach (CUDA); the fastest of the three at full depth on CPU (docs/benchmarks.md, item 3)."""
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if fused and cfg.optim_state_dtype == "param":
        kwargs["fused"] = True
    return OPTIMIZERS[cfg.optim_state_dtype](params, **kwargs)


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total=total, warmup=cfg.warmup_steps, schedule=cfg.schedule)
    )
