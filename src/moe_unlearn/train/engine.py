"""The unlearning loop: setup -> prepare -> train (one readable loop) -> save -> evaluate.

Per optimizer step: for each micro-batch, (forget, retain) = pairs.batch(i); the method's loss
over the forwards it runs (recorded by the context), plus the adapters' loss terms on those
forwards, plus load_balancing_coef * aux; backward. Then slice grads, clip, optimizer step,
slice write-back, scheduler, adapters.after_step, log, periodic eval, checkpoint. A checkpoint
holds everything the next step depends on, so `resume=True` after a kill (even -9) ends with
exactly the numbers of an uninterrupted run.

The engine talks to adapters only through their declared capabilities and hooks
(adapters/base.py); nothing here knows an adapter or method by name.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed

from moe_unlearn.adapters import ADAPTERS, Adapter
from moe_unlearn.benchmark import resolve_manifest
from moe_unlearn.core.context import ForwardSpec, RunContext
from moe_unlearn.core.trainable import Trainable, freeze_all_but, select_refs, split_refs
from moe_unlearn.data import PairedBatches, UnlearnData, load_data, paired_batches
from moe_unlearn.data.tokenize import to_device
from moe_unlearn.errors import RunFailure, UserError
from moe_unlearn.methods import METHODS, Method
from moe_unlearn.models import RoutingCapture, load_model, moe_layers, resolve_device
from moe_unlearn.paths import is_inside
from moe_unlearn.train import checkpoint
from moe_unlearn.train.config import UnlearnConfig
from moe_unlearn.train.optim import build_optimizer, build_scheduler, total_steps

OUTPUTS = ("model", "checkpoints", "config.yaml", "log.jsonl", "metrics.json")


# ---- setup --------------------------------------------------------------------------------
def check_out_dir(out_dir: Path, model_dir: Path | None, *, overwrite: bool, resume: bool) -> None:
    """Refuse an output dir inside (or holding) the input model, or a used one without overwrite/resume."""
    if overwrite and resume:
        raise UserError("use either --overwrite (start again) or --resume (continue), not both")
    out = out_dir.resolve()
    if model_dir is not None and model_dir.is_dir():
        if is_inside(out, model_dir):
            raise UserError(f"output dir {out_dir} is the input model dir {model_dir} or inside it; choose another --out")
        if is_inside(model_dir, out):  # --overwrite would delete OUT/model
            raise UserError(f"output dir {out_dir} contains the input model dir {model_dir}; choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out_dir} is a file; choose a directory for --out")
    used = out.is_dir() and any(out.iterdir())
    if used and not (overwrite or resume):
        raise UserError(f"output dir {out_dir} is not empty; pass --overwrite to replace its results or --resume to continue")
    if overwrite:  # only what a run writes; other files are left alone
        for name in OUTPUTS:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def model_path_of(cfg: UnlearnConfig, data: UnlearnData) -> Path:
    """model.path, else the model the data manifest names."""
    if cfg.model.path:
        return Path(cfg.model.path)
    if data.model is None:
        raise UserError("set model.path: the data has no manifest naming a model")
    return Path(data.model)


def build_trainable(ctx: RunContext, method: Method, adapters: list[Adapter]) -> Trainable:
    """train.params (or the method's own specs), narrowed by the adapters that select what trains;
    LoRA through peft. Everything else is frozen."""
    cfg = ctx.cfg.train
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = cfg.lora
        ctx.model = get_peft_model(ctx.model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora.target_modules, target_parameters=lora.target_parameters,
        ))
        ctx.lora = True
        full = {n: p for n, p in ctx.model.named_parameters() if p.requires_grad}
        return Trainable(full, [])
    specs = method.select_params(ctx, cfg.params) or cfg.params
    refs = select_refs(ctx.model, specs)
    for adapter in adapters:
        if adapter.selects_trainable:
            refs = adapter.select_trainable(ctx, refs)
    if not refs:
        raise UserError("no parameter is left to train after the adapters narrowed train.params")
    trainable = split_refs(refs)
    freeze_all_but(ctx.model, trainable)
    return trainable


def forward_spec(ctx: RunContext, adapters: list[Adapter]) -> ForwardSpec:
    """What every training forward records, and how retain tokens are weighted: from the adapters'
    capture_roles / capture_grad declarations and their retain_token_weights hooks (product)."""
    capture = frozenset().union(*(a.capture_roles() for a in adapters))
    grad = frozenset().union(*(a.capture_roles() for a in adapters if a.capture_grad))

    def retain_weights(batch: dict[str, torch.Tensor], routing: RoutingCapture) -> torch.Tensor | None:
        weights = None
        for a in adapters:
            w = a.retain_token_weights(ctx, batch, routing)
            if w is not None:
                weights = w if weights is None else weights * w
        return weights

    return ForwardSpec(capture=capture, capture_grad=grad, retain_weights=retain_weights)


# ---- the loop -----------------------------------------------------------------------------
class GracefulStop:
    """SIGINT/SIGTERM: the first asks for a checkpoint at the next step boundary; a second
    SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True

        for s in old:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _finite(x: torch.Tensor | float) -> bool:
    return bool(torch.isfinite(torch.as_tensor(x)).all())


class Trainer:
    """The loop's state; `Trainer.create` builds one from a config, `train()` reads top to bottom."""

    def __init__(self, ctx: RunContext, method: Method, adapters: list[Adapter], pairs: PairedBatches, *,
                 progress: bool = True, reference_bytes: int = 0,
                 original_routing: dict[str, RoutingCapture] | None = None) -> None:
        if ctx.trainable is None:
            raise ValueError("build ctx.trainable (build_trainable) before the Trainer")
        self.ctx, self.method, self.adapters, self.pairs, self.progress = ctx, method, adapters, pairs, progress
        self.trainable = ctx.trainable
        self.cfg = cfg = ctx.cfg.train
        # an adapter that needs a retain forward gets one even when the method runs none (GA)
        self.retain_forward = any(a.needs_retain_forward for a in adapters)
        self.total = total_steps(cfg, ctx.split_size("forget"), ctx.cfg.data.batch_size)
        self.optimizer = build_optimizer(cfg, self.trainable.leaves())
        self.scheduler = build_scheduler(cfg, self.optimizer, self.total)
        self.log_path = ctx.out_dir / "log.jsonl"
        self.ckpt_dir = ctx.out_dir / "checkpoints"
        self.step_seconds: list[float] = []
        self.last_checkpoint: Path | None = None
        self.stopped_early: dict[str, Any] | None = None
        self.reference_bytes = reference_bytes  # kept original values (methods/adapters with a reference)
        self.resumed = False  # state loaded from the latest checkpoint
        self.original_routing = original_routing  # the original model's eval routing (final evaluation)
        self.accelerator = Accelerator()  # backward; device and bf16 autocast are the context's

    @classmethod
    def create(cls, cfg: UnlearnConfig, out_dir: str | Path, *, progress: bool = True, overwrite: bool = False,
               resume: bool = False, eval_routing: bool = True) -> Trainer:
        """Everything before the first step, in this order: out dir checks; model, data, method and
        adapters; adapter checks; config.yaml; preparation on the ORIGINAL model (the method, then
        adapters that select what trains, then the trained set, then the other adapters, which can
        read it); the original routing for the final evaluation (skipped with eval_routing=False);
        the kept originals a reference needs; optimizer; and, on resume, the latest checkpoint."""
        from moe_unlearn.eval import capture_eval_routing

        out = Path(out_dir)
        data = load_data(resolve_manifest(cfg.data))
        model_path = model_path_of(cfg, data)
        check_out_dir(out, model_path, overwrite=overwrite, resume=resume)
        set_seed(cfg.seed)
        device = resolve_device(cfg.model.device)
        model, tokenizer = load_model(model_path, dtype=cfg.model.dtype, device=str(device),
                                      trust_remote_code=cfg.model.trust_remote_code)
        pairs = paired_batches(cfg.data, data, tokenizer, seed=cfg.seed)
        method = METHODS.get(cfg.method)(cfg.section(cfg.method))
        adapters = [ADAPTERS.get(name)(cfg.section(name)) for name in cfg.adapters]
        _check_retain_set(cfg, pairs, method, adapters)
        ctx = RunContext(model=model, tokenizer=tokenizer, layers=moe_layers(model), cfg=cfg, data=data,
                         splits={"forget": pairs.forget, "retain": pairs.retain or []}, device=device, out_dir=out)
        ctx.spec = forward_spec(ctx, adapters)
        ctx.model.eval()
        for a in adapters:
            a.check(ctx)
        # only now, so a combination the checks refuse leaves no output directory behind
        out.mkdir(parents=True, exist_ok=True)
        _write_config(cfg, out, resume=resume)
        # everything below until the checkpoint is loaded sees the ORIGINAL model, also on resume
        method.prepare(ctx)
        for a in adapters:
            if a.selects_trainable:
                a.prepare(ctx)
        ctx.trainable = build_trainable(ctx, method, adapters)
        for a in adapters:
            if not a.selects_trainable:
                a.prepare(ctx)
        original_routing = capture_eval_routing(ctx.model, ctx.tokenizer, ctx.data, cfg.eval) if eval_routing else None
        needs_ref = method.uses_reference() or any(a.needs_reference for a in adapters)
        reference_bytes = ctx.trainable.keep_originals() if needs_ref and not ctx.lora else 0

        trainer = cls(ctx, method, adapters, pairs, progress=progress, reference_bytes=reference_bytes,
                      original_routing=original_routing)
        if not (resume and trainer.load_checkpoint()):
            trainer.log_path.write_text("")
            set_seed(cfg.seed)  # training draws the same numbers however long prepare() was
        return trainer

    # -- checkpoints
    def save_checkpoint(self) -> Path:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": checkpoint.rng_state(),
            "adapters": {a.name: a.state_dict() for a in self.adapters},
            "step": self.ctx.step,
            "log_offset": self.log_path.stat().st_size if self.log_path.exists() else 0,
            "step_seconds": list(self.step_seconds),
        }
        self.last_checkpoint = checkpoint.save(self.ckpt_dir, self.ctx.step, self.trainable.state_tensors(), state)
        return self.last_checkpoint

    def load_checkpoint(self) -> bool:
        """Restore the latest checkpoint's state; False when there is none."""
        path = checkpoint.latest(self.ckpt_dir)
        if path is None:
            return False
        tensors, state = checkpoint.load(path, self.ctx.device)
        self.trainable.load_state_tensors(tensors)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for a in self.adapters:
            a.load_state_dict(state["adapters"].get(a.name, {}))
        checkpoint.set_rng_state(state["rng"])
        self.ctx.step = int(state["step"])
        self.step_seconds = list(state["step_seconds"])
        with open(self.log_path, "ab") as fh:  # drop log lines written after the checkpoint
            fh.truncate(int(state["log_offset"]))
        self.last_checkpoint = path
        self.resumed = True
        return True

    def fail(self, what: str) -> RunFailure:
        kept = (f"the last good checkpoint ({self.last_checkpoint.name}) is kept in {self.ckpt_dir}"
                if self.last_checkpoint else "no checkpoint was written yet (train.checkpoint_every)")
        return RunFailure(f"{what} at step {self.ctx.step + 1}: training diverged; {kept}; lower train.lr")

    # -- one optimizer step
    def micro_step(self, forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor] | None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (method + adapter terms + load balancing) and its numbers to log."""
        ctx = self.ctx
        with ctx.recording() as forwards:
            out = self.method.loss(ctx, forget, retain)
            if self.retain_forward and "retain" not in forwards and retain is not None:
                ctx.forward(retain, role="retain")
        terms = {"method": out.loss}
        for a in self.adapters:
            terms.update({f"{a.name}/{k}": v for k, v in a.loss_terms(ctx, forwards).items()})
        aux = [f.aux_loss for f in forwards.values() if f.aux_loss is not None]
        if aux:
            terms["load_balancing"] = self.cfg.load_balancing_coef * torch.stack(aux).sum()
        loss = sum(terms.values())
        logs = {**out.logs, **{k: float(v.detach()) for k, v in terms.items() if k != "method"}}
        return loss, logs

    def step(self) -> dict[str, Any]:
        ctx, accum = self.ctx, self.cfg.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro in range(accum):
            forget, retain = self.pairs.batch(ctx.step * accum + micro)
            loss, logs = self.micro_step(to_device(forget, ctx.device),
                                         None if retain is None else to_device(retain, ctx.device))
            if not _finite(loss.detach()):
                raise self.fail(f"loss is {float(loss.detach())}")
            self.accelerator.backward(loss / accum)
            for k, v in {"loss": float(loss.detach()), **logs}.items():
                sums[k] = sums.get(k, 0.0) + v / accum
        self.trainable.collect_slice_grads()
        norm = torch.nn.utils.clip_grad_norm_(self.trainable.leaves(), self.cfg.max_grad_norm or float("inf"))
        if not _finite(norm):
            raise self.fail(f"gradient norm is {float(norm)}")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.trainable.write_back()
        self.scheduler.step()
        ctx.step += 1
        for a in self.adapters:
            a.after_step(ctx)
        return {**sums, "lr": lr, "grad_norm": float(norm)}

    def log(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def periodic_eval(self) -> bool:
        """Evaluate forgetting; True when the early-stop target is reached."""
        from moe_unlearn.eval import evaluate_model

        quick = replace(self.ctx.cfg.eval, metrics=[m for m in ("nll", "mc_acc") if m in self.ctx.cfg.eval.metrics])
        res = evaluate_model(self.ctx.model, self.ctx.tokenizer, self.ctx.data, quick, progress=False)
        forget = res.get("forget", {})
        self.log({"step": self.ctx.step, "eval": {"forget": forget, "retain": res.get("retain", {})}})
        target = self.cfg.early_stop
        hit = (target.forget_mc_acc_at_most is not None and forget.get("mc_acc") is not None
               and forget["mc_acc"] <= target.forget_mc_acc_at_most) or (
               target.forget_nll_at_least is not None and forget.get("nll") is not None
               and forget["nll"] >= target.forget_nll_at_least)
        if hit:
            self.stopped_early = {"step": self.ctx.step, "forget": forget}
        return hit

    def train(self) -> None:
        from tqdm.auto import tqdm

        ctx, cfg = self.ctx, self.cfg
        stop = GracefulStop()
        bar = tqdm(total=self.total, initial=ctx.step, desc=f"unlearn {ctx.cfg.method}", disable=not self.progress)
        # step 0 is evaluated too (where the trade-off curve starts); the original model may already meet the target
        done = bool(cfg.eval_every) and ctx.step == 0 and self.periodic_eval()
        ctx.model.train()
        with stop.installed():
            try:
                while not done and ctx.step < self.total:
                    if stop.requested:  # at a step boundary: the state is consistent
                        path = self.save_checkpoint()
                        raise RunFailure(f"interrupted after step {ctx.step}; resumable checkpoint {path}; "
                                         f"rerun with --resume to continue")
                    t0 = time.perf_counter()
                    record = self.step()
                    seconds = time.perf_counter() - t0
                    self.step_seconds.append(seconds)
                    self.log({"step": ctx.step, **record, "seconds": round(seconds, 4)})
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}")
                    if cfg.eval_every and ctx.step % cfg.eval_every == 0 and self.periodic_eval():
                        break
                    if cfg.checkpoint_every and ctx.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
            except KeyboardInterrupt:  # inside a step: its half-done state is not saved
                kept = self.last_checkpoint.name if self.last_checkpoint else "none"
                raise RunFailure(f"interrupted during step {ctx.step + 1}; last checkpoint: {kept}; "
                                 f"rerun with --resume to continue from it") from None
            finally:
                bar.close()
                ctx.model.eval()


def _check_retain_set(cfg: UnlearnConfig, pairs: PairedBatches, method: Method, adapters: list[Adapter]) -> None:
    """A retain term, or an adapter that needs a retain forward, needs retain records in the train format."""
    if pairs.retain is not None:
        return
    fmt = cfg.data.train_format
    if method.has_retain_term:
        raise UserError(f"method '{cfg.method}' has a retain term but the retain set has no '{fmt}' records; "
                        f"provide them or set {cfg.method}.alpha=0")
    needing = [a.name for a in adapters if a.needs_retain_forward]
    if needing:
        raise UserError(f"adapter '{needing[0]}' needs retain forwards but the retain set has no '{fmt}' records; "
                        "provide them")


# ---- public API ---------------------------------------------------------------------------
def run_unlearning(cfg: UnlearnConfig, *, out_dir: str | Path, overwrite: bool = False,
                   resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run one unlearning job into out_dir and return its metrics (also metrics.json)."""
    from moe_unlearn.eval import evaluate_model

    t_start = time.perf_counter()
    out = Path(out_dir)
    trainer = Trainer.create(cfg, out, progress=progress, overwrite=overwrite, resume=resume)
    ctx = trainer.ctx
    trainer.train()

    for a in trainer.adapters:
        a.after_training(ctx)
    model = ctx.model.merge_and_unload() if ctx.lora else ctx.model
    model.save_pretrained(out / "model")
    ctx.tokenizer.save_pretrained(out / "model")
    results = evaluate_model(model, ctx.tokenizer, ctx.data, cfg.eval,
                             original_routing=trainer.original_routing, progress=progress)
    metrics = {
        "method": cfg.method,
        "adapters": list(cfg.adapters),
        "steps": ctx.step,
        **results,
        "timing": {
            "step_seconds_median": statistics.median(trainer.step_seconds) if trainer.step_seconds else 0.0,
            "total_seconds": time.perf_counter() - t_start,
        },
        "memory": {
            "trainable_params": trainer.trainable.numel(),
            "reference_bytes": trainer.reference_bytes,
            "optimizer_state_bytes": optimizer_state_bytes(trainer.optimizer),
        },
        "adapter_info": {a.name: a.summary() for a in trainer.adapters},
        "early_stop": trainer.stopped_early,
        "resumed": trainer.resumed,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    return metrics


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values()
               for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0)


def _json_default(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON-able: {type(x).__name__}")


def _write_config(cfg: UnlearnConfig, out: Path, *, resume: bool) -> None:
    """config.yaml holds the fully resolved config; --resume must use the same one."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    path = out / "config.yaml"
    if resume and path.is_file():
        old = yaml.safe_load(path.read_text())
        if old != yaml.safe_load(text):
            changed = sorted(k for k in set(old) | set(yaml.safe_load(text)) if old.get(k) != yaml.safe_load(text).get(k))
            raise UserError(f"--resume needs the run's own config; these sections differ from {path}: {', '.join(changed)}")
    path.write_text(text)


__all__ = ["Trainer", "run_unlearning", "build_trainable", "check_out_dir", "forward_spec"]
