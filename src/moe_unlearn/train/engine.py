"""The unlearning loop: setup -> prepare -> train (one readable loop) -> save -> evaluate.

Per optimizer step: for each micro-batch, (forget, retain) = pairs.batch(i); the method's loss
over the forwards it runs (recorded by the context; the forget and retain batches share one
forward when both are forwarded with a graph, ctx.joint), plus the adapters' loss terms on those
forwards, plus load_balancing_coef * aux; backward. Then slice grads, clip, optimizer step, gradients freed,
slice write-back, scheduler, adapters.after_step, log, periodic eval, checkpoint. A checkpoint
holds everything the next step depends on, so `resume=True` after a kill (even -9) ends with
exactly the numbers of an uninterrupted run.

The engine talks to methods and adapters only through their capability records (core/needs.py)
and hooks (adapters/base.py); nothing here knows an adapter or method by name. What accelerate
and the sharding engines need around the loop lives in train/accel.py.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from moe_unlearn.adapters import ADAPTERS, Adapter
from moe_unlearn.benchmark import resolve_manifest
from moe_unlearn.core.context import ForwardSpec, RunContext
from moe_unlearn.core.dist import (
    all_reduce_sum, barrier, broadcast_object, decided_by_main, gather_objects, is_main, mean_over_processes,
    shard_rows, world_size,
)
from moe_unlearn.core.needs import RunNeeds
from moe_unlearn.core.trainable import Trainable, freeze_all_but, select_refs, split_refs
from moe_unlearn.data import PairedBatches, UnlearnData, load_data, paired_batches, shared_records
from moe_unlearn.data.splits import TRAINED_FIELDS
from moe_unlearn.data.tokenize import to_device
from moe_unlearn.errors import RunFailure, UserError, first_line, warn
from moe_unlearn.eval.config import EvalConfig
from moe_unlearn.eval.context import EvalCache
from moe_unlearn.eval.forgotten import ForgetTarget, holdout_target, oracle_target
from moe_unlearn.eval.schema import run_metrics, timing
from moe_unlearn.methods import METHODS, Method
from moe_unlearn.models import RoutingCapture, first_nonfinite, load_model, moe_layers
from moe_unlearn.report.model_card import write_model_card
from moe_unlearn.train import accel, checkpoint, tracking
from moe_unlearn.train.config import TrainConfig, UnlearnConfig, check_retain_set, run_needs, run_settings
from moe_unlearn.train.optim import total_steps
from moe_unlearn.train.retain_guard import RetainGuard
from moe_unlearn.train.rundir import RunDir, run_inputs
from moe_unlearn.train.stop import GracefulStop
from moe_unlearn.vocab import SPLITS


# ---- setup --------------------------------------------------------------------------------
def model_path_of(cfg: UnlearnConfig, data: UnlearnData) -> Path:
    """model.path, else the model the data manifest names."""
    if cfg.model.path:
        return Path(cfg.model.path)
    if data.model is None:
        raise UserError("set model.path: the data has no manifest naming a model")
    return Path(data.model)


def build_trainable(ctx: RunContext, method: Method, adapters: list[Adapter], cfg: TrainConfig) -> Trainable:
    """train.params (or the method's own specs), narrowed by the adapters that select what trains;
    LoRA through peft. Everything else is frozen."""
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = cfg.lora
        try:
            ctx.model = get_peft_model(ctx.model, LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=lora.target_modules, target_parameters=lora.target_parameters,
            ))
        except ValueError as e:  # peft's word for targets that match nothing in this model
            raise UserError(f"train.lora: {first_line(e, type(e).__name__)[:300]}") from None
        ctx.lora = True
        full = {n: p for n, p in ctx.model.named_parameters() if p.requires_grad}
        return Trainable(full, [])
    specs = method.select_params(ctx, cfg.params) or cfg.params
    refs = select_refs(ctx.model, specs)
    for adapter in adapters:
        if adapter.needs(adapter.cfg).selects_trainable:
            refs = adapter.select_trainable(ctx, refs)
    if not refs:
        raise UserError("no parameter is left to train after the adapters narrowed train.params")
    trainable = split_refs(refs)
    freeze_all_but(ctx.model, trainable)
    return trainable


def forward_spec(ctx: RunContext, adapters: list[Adapter], needs: RunNeeds) -> ForwardSpec:
    """What every training forward records, and how retain tokens are weighted: from the run's
    capture / capture_grad needs and the adapters' retain_token_weights hooks (product)."""

    def retain_weights(batch: dict[str, torch.Tensor], routing: RoutingCapture) -> torch.Tensor | None:
        weights = None
        for a in adapters:
            w = a.retain_token_weights(ctx, batch, routing)
            if w is not None:
                weights = w if weights is None else weights * w
        return weights

    return ForwardSpec(capture=needs.capture, capture_grad=needs.capture_grad, retain_weights=retain_weights)


# ---- the loop -----------------------------------------------------------------------------
def _finite(x: torch.Tensor | float) -> bool:
    return bool(torch.isfinite(torch.as_tensor(x)).all())


class Trainer:
    """The loop's state; `Trainer.create` builds one from a config, `train()` reads top to bottom.

    accelerate owns devices, mixed precision, gradient accumulation and the distributed engine
    (DDP, FSDP2, DeepSpeed); each process trains on its own rows of every global batch, and
    only the main process writes files.
    """

    def __init__(self, ctx: RunContext, config: UnlearnConfig, method: Method, adapters: list[Adapter],
                 pairs: PairedBatches, accelerator: Accelerator, *, progress: bool = True, reference: bool = False,
                 original_routing: dict[str, RoutingCapture] | None = None, run_dir: RunDir | None = None,
                 eval_cache: EvalCache | None = None) -> None:
        if ctx.trainable is None:
            raise ValueError("build ctx.trainable (build_trainable) before the Trainer")
        self.ctx, self.method, self.adapters, self.pairs = ctx, method, adapters, pairs
        self.accelerator = accelerator
        self.progress = progress and accelerator.is_main_process
        self.trainable = ctx.trainable
        self.config, self.cfg = config, config.train  # the run's config, and its train section
        # an adapter that needs a retain forward gets one even when the method runs none (GA)
        needs = run_needs(method, adapters)
        self.retain_forward = needs.retain_forward
        self.total = total_steps(self.cfg, ctx.split_size("forget"), config.data.batch_size * world_size())
        self.sharded = accel.is_sharded(accelerator)
        ctx.model, self.optimizer, self.scheduler, self.slice_params = accel.prepare(
            accelerator, ctx.model, self.trainable, self.cfg, self.total, config.data.batch_size)
        # one forward serves the forget and retain batches (also under ZeRO-3: core.sharded.shadow)
        self.joint_forward = needs.joint_forward
        # kept original values (methods/adapters with a reference): of sharded parameters, this process's part
        self.reference_bytes = self.trainable.keep_originals() if reference else 0
        self.log_path = ctx.out_dir / "log.jsonl"
        self.ckpt_dir = ctx.out_dir / "checkpoints"
        self.step_seconds: list[float] = []
        self.last_checkpoint: Path | None = None
        self.stopped_early: dict[str, Any] | None = None
        self.forget_target: ForgetTarget | None = None  # set from the retrain oracle by run_unlearning
        self.retrained: dict[str, Any] | None = None  # the retrain oracle's metrics (run_unlearning)
        # encoded eval sets and results of unchanged weights, shared by the periodic and final
        # evaluations (eval_cache: one that already holds earlier models'); one process only
        # (fingerprinting sharded parameters would gather them)
        self.eval_cache: EvalCache | None = None
        if world_size() == 1:
            self.eval_cache = eval_cache if eval_cache is not None else EvalCache()
        kept = self.cfg.early_stop.retain_kept
        self.retain_guard = RetainGuard(kept) if kept is not None else None
        self.guarded: dict[str, Any] | None = None  # the guard's record at the end of training
        if self.retain_guard is not None and self.sharded:
            raise UserError("'train.early_stop.retain_kept' restores a host copy of the trained values, which a "
                            "sharding engine (FSDP2, ZeRO-3) does not keep: drop it or run without sharding")
        self.resumed = False  # state loaded from the latest checkpoint
        self.original_routing = original_routing  # the original model's eval routing (final evaluation)
        self.run_dir = run_dir or RunDir(ctx.out_dir, [])  # the lock and atomic writes of ctx.out_dir

    @classmethod
    def create(cls, cfg: UnlearnConfig, out_dir: str | Path, *, progress: bool = True, overwrite: bool = False,
               resume: bool = False, eval_routing: bool = True, eval_cache: EvalCache | None = None) -> Trainer:
        """Everything before the first step, in this order: accelerator; out dir checks; model,
        data, method and adapters; adapter checks; config.yaml; preparation on the ORIGINAL model
        (the method, then adapters that select what trains, then the trained set, then the other
        adapters, which can read it); the original routing for the final evaluation (skipped with
        eval_routing=False); optimizer and accelerate's prepare; the kept originals a reference
        needs; and, on resume, the latest checkpoint."""
        from moe_unlearn.eval import capture_eval_routing, check_processes

        # the benchmark cache is filled before the process group starts: every process of a launch
        # resolves it alone, its builders ordered by the cache entry's lock (a build runs no collective)
        data = load_data(resolve_manifest(cfg.data))
        out = Path(out_dir)
        tracking.check_installed(cfg.train.log_with)
        accelerator = accel.make_accelerator(cfg.model.device, cfg.train.precision, cfg.train.grad_accum,
                                             log_with=cfg.train.log_with, project_dir=out / "tracking")
        cfg = accel.fit_config(cfg, accelerator)
        check_processes(cfg.eval)
        model_path = model_path_of(cfg, data)
        run_dir = RunDir(out, run_inputs(cfg.files, model_path, cfg.data, data.manifest), overwrite=overwrite,
                         resume=resume)
        decided_by_main(run_dir.check)  # the run's lock and files, judged once: a rank never refuses its own run
        set_seed(cfg.seed)
        device = accelerator.device if accelerator.device.type != "cpu" else torch.device("cpu")  # not "cpu:0"
        with accel.whole_model_loading(accelerator):
            model, tokenizer = load_model(model_path, dtype=cfg.model.dtype, device=str(device),
                                          trust_remote_code=cfg.model.trust_remote_code,
                                          allow_missing=cfg.model.allow_missing_weights)
        pairs = paired_batches(cfg.data, data, tokenizer, seed=cfg.seed, processes=world_size())
        method = METHODS.get(cfg.method)(cfg.section(cfg.method))
        adapters = [ADAPTERS.get(name)(cfg.section(name)) for name in cfg.adapters]
        needs = run_needs(method, adapters)
        check_retain_set(cfg, needs, retain_records=pairs.retain is not None)
        ctx = RunContext(model=model, tokenizer=tokenizer, layers=moe_layers(model), settings=run_settings(cfg),
                         data=data, splits={"forget": pairs.forget, "retain": pairs.retain or []}, device=device,
                         out_dir=out)
        ctx.spec = forward_spec(ctx, adapters, needs)
        ctx.model.eval()
        for a in adapters:
            a.check(ctx)
        # only now, so a combination the checks refuse leaves no output directory behind
        decided_by_main(lambda: run_dir.claim(cfg.to_dict()))  # the lock, --overwrite / --resume, config.yaml
        if cfg.train.log_with:  # OUT/tracking/<OUT's name>/ for the trackers that write files
            accelerator.init_trackers(out.resolve().name or "moe-unlearn", config=tracking.hparams(cfg.to_dict()))
        with run_dir.released_on_error():
            if is_main() and not method.learns:  # after every refusal: a refused run prints its error line only
                _warn_overlap(cfg.data.train_format, data)  # (fine-tuning learns both sets: no conflict)
            # everything below until the checkpoint is loaded sees the ORIGINAL model, also on resume
            method.prepare(ctx)
            for a in adapters:
                if needs.adapters[a.name].selects_trainable:
                    a.prepare(ctx)
            ctx.trainable = build_trainable(ctx, method, adapters, cfg.train)
            for a in adapters:
                if not needs.adapters[a.name].selects_trainable:
                    a.prepare(ctx)
            original_routing = None
            if eval_routing:  # from eval_cache when it holds these weights' capture (one process)
                original_routing = capture_eval_routing(ctx.model, ctx.tokenizer, ctx.data, cfg.eval,
                                                        cache=eval_cache if world_size() == 1 else None)

            trainer = cls(ctx, cfg, method, adapters, pairs, accelerator, progress=progress,
                          reference=needs.reference and not ctx.lora, original_routing=original_routing, run_dir=run_dir,
                          eval_cache=eval_cache)
            if not (resume and trainer.load_checkpoint()):
                if accelerator.is_main_process:
                    trainer.log_path.write_text("")
                set_seed(cfg.seed)  # training draws the same numbers however long prepare() was
            barrier()
            return trainer

    # -- checkpoints
    def save_checkpoint(self) -> Path:
        """Every process's RNG state, the trained values, optimizer, scheduler and adapter state,
        written atomically by the main process. Under a sharding engine (FSDP2, ZeRO-3) the model
        and optimizer shards are written by every process with accelerate's save_state."""
        self.check_finite(self.eval_model().named_parameters())
        rng = gather_objects([checkpoint.rng_state()])  # one per process, in process order
        step = self.ctx.step
        tmp = checkpoint.begin(self.ckpt_dir, step) if is_main() else None
        if tmp is not None and self.sharded:
            (tmp / "engine").mkdir()  # before any process writes its shards into it
        exists = broadcast_object(tmp is None)
        slice_state: dict[str, dict[str, Any]] = {}
        if not exists and self.sharded:
            slice_state = accel.save_sharded(self.accelerator, self.optimizer, self.trainable,
                                             broadcast_object(tmp) / "engine")
        if is_main() and not exists:
            state = {
                "rng": rng,
                "adapters": {a.name: a.state_dict() for a in self.adapters},
                "step": step,
                "log_offset": self.log_path.stat().st_size if self.log_path.exists() else 0,
                "step_seconds": list(self.step_seconds),
                "retain_guard": self.retain_guard.state_dict() if self.retain_guard else {},
            }
            if self.sharded:
                state.update(slice_optimizer=slice_state)
            else:
                state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict())
            tensors = {} if self.sharded else self.trainable.state_tensors()
            checkpoint.commit(self.ckpt_dir, step, tmp, tensors, state, self.config.to_dict())
        barrier()
        self.last_checkpoint = self.ckpt_dir / checkpoint.name_of(step)
        return self.last_checkpoint

    def load_checkpoint(self) -> bool:
        """Restore the latest checkpoint's state; False when there is none."""
        path = decided_by_main(lambda: checkpoint.latest(self.ckpt_dir))  # what the main process saw
        if path is None:
            return False
        tensors, state = checkpoint.load(path, self.ctx.device)
        if len(state["rng"]) != world_size():
            raise UserError(f"checkpoint {path} was written by {len(state['rng'])} process(es); resume it with "
                            f"the same number (this run has {world_size()})")
        if self.sharded:
            accel.load_sharded(self.accelerator, self.optimizer, self.trainable, path / "engine",
                               state["slice_optimizer"])
        else:
            self.trainable.load_state_tensors(tensors)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        for a in self.adapters:
            a.load_state_dict(state["adapters"].get(a.name, {}))
        if self.retain_guard is not None:
            self.retain_guard.load_state_dict(state.get("retain_guard", {}))
        checkpoint.set_rng_state(state["rng"][self.accelerator.process_index])
        self.ctx.step = int(state["step"])
        self.step_seconds = list(state["step_seconds"])
        barrier()
        if is_main():
            self.run_dir.truncate_log(int(state["log_offset"]))  # drop log lines written after the checkpoint
        self.last_checkpoint = path
        self.resumed = True
        return True

    def fail(self, what: str, step: int | None = None) -> RunFailure:
        kept = (f"the last good checkpoint ({self.last_checkpoint.name}) is kept in {self.ckpt_dir}"
                if self.last_checkpoint else "no checkpoint was written yet (train.checkpoint_every)")
        step = self.ctx.step + 1 if step is None else step
        return RunFailure(f"{what} at step {step}: training diverged; {kept}; lower train.lr")

    def check_finite(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Never save a non-finite checkpoint or model: checks the update of the last step (on
        every process, which all stop together)."""
        bad = first_nonfinite(tensors)
        if all_reduce_sum(torch.tensor(float(bad is not None))) > 0:
            raise self.fail(f"parameter '{bad or 'on another process'}' is not finite after the update", step=self.ctx.step)

    # -- one optimizer step
    def micro_step(self, forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor] | None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (method + adapter terms + load balancing) and its numbers to log."""
        ctx = self.ctx
        joint = {"forget": forget, "retain": retain} if self.joint_forward else {}
        with ctx.recording() as forwards, ctx.joint(joint):
            out = self.method.loss(ctx, forget, retain)
            if self.retain_forward and "retain" not in forwards and retain is not None:
                ctx.forward(retain, role="retain")
        terms = {"method": out.loss}
        with ctx.recording() as own:  # forwards adapters run themselves (keep_routing's retain sample)
            for a in self.adapters:
                terms.update({f"{a.name}/{k}": v for k, v in a.loss_terms(ctx, forwards).items()})
        aux = [f.aux_loss for f in forwards.values() if f.aux_loss is not None]
        if aux:
            terms["load_balancing"] = self.cfg.load_balancing_coef * torch.stack(aux).sum()
        loss = sum(terms.values())
        if self.sharded:
            loss = loss + accel.output_anchor([*forwards.values(), *own.values()])
        logs = {**out.logs, **{k: float(v.detach()) for k, v in terms.items() if k != "method"}}
        return loss, logs

    def step(self) -> dict[str, Any]:
        """One optimizer step over grad_accum micro-batches; the logged numbers are means over processes."""
        ctx, accum, acc = self.ctx, self.cfg.grad_accum, self.accelerator
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]  # before backward: DeepSpeed steps optimizer and schedule inside it
        sums: dict[str, float] = {}
        for micro in range(accum):
            forget, retain = self.pairs.batch(ctx.step * accum + micro)
            forget = to_device(shard_rows(forget), ctx.device)
            retain = None if retain is None else to_device(shard_rows(retain), ctx.device)
            with acc.accumulate(ctx.model):
                loss, logs = self.micro_step(forget, retain)
                numbers = {"loss": float(loss.detach()), **logs}
                means = mean_over_processes(torch.tensor(list(numbers.values()), dtype=torch.float64)).tolist()
                if not _finite(torch.tensor(means[0])):
                    raise self.fail(f"loss is {means[0]}")
                if not torch.is_tensor(loss) or not loss.requires_grad:
                    adapters = f" with adapters {[a.name for a in self.adapters]}" if self.adapters else ""
                    raise UserError(f"method '{self.config.method}'{adapters}: no loss term depends on a trained "
                                    f"parameter (e.g. rmu.layer lies before every layer that trains); "
                                    f"train other parameters or move the method's layer")
                acc.backward(loss)  # divides by grad_accum itself
            for k, v in zip(numbers, means):
                sums[k] = sums.get(k, 0.0) + v / accum
        self.trainable.collect_slice_grads()
        norm = acc.clip_grad_norm_(self.trainable.leaves(), self.cfg.max_grad_norm or float("inf"))
        if not _finite(norm) and self.cfg.precision != "fp16":  # fp16: the grad scaler skips this step
            raise self.fail(f"gradient norm is {float(norm)}")
        self.optimizer.step()
        # free the gradients now, not at the next step's start: evaluation, checkpoints and the
        # adapters' after_step run between steps without holding a model's worth of them
        self.optimizer.zero_grad(set_to_none=True)
        self.trainable.write_back()
        self.scheduler.step()
        ctx.step += 1
        for a in self.adapters:
            a.after_step(ctx)
        return {**sums, "lr": lr, "grad_norm": float(norm)}

    def log(self, record: dict[str, Any]) -> None:
        """One line of log.jsonl (the source of truth), and its numbers to the trackers."""
        if is_main():
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.cfg.log_with:
            self.accelerator.log(tracking.scalars({k: v for k, v in record.items() if k != "step"}),
                                 step=int(record["step"]))

    def periodic_eval(self) -> bool:
        """Evaluate forgetting (every process, its rows); True when the early-stop target is reached."""
        quick = replace(self.config.eval, metrics=[m for m in ("nll", "mc_acc") if m in self.config.eval.metrics])
        # the holdout split only judges forgetting when there is no oracle target (a third of the time)
        splits = ("forget", "retain") if self.forget_target is not None else SPLITS
        res = self.quick_eval(quick, splits)
        forget = res.get("forget", {})
        self.log({"step": self.ctx.step, "eval": {"forget": forget, "retain": res.get("retain", {})}})
        rule = self.cfg.early_stop
        target = (self.forget_target or holdout_target(res)) if rule.forgotten else None
        if self.retain_guard is not None:
            self.retain_guard.observe(self.ctx.step, res.get("retain", {}), self.trainable)
        hit = rule.fixed_bounds_met(forget) or (target is not None and target.reached(forget))
        if hit:
            self.stopped_early = {"step": self.ctx.step, "forget": forget,
                                  **({"target": dataclasses.asdict(target)} if target else {})}
        return hit

    def quick_eval(self, cfg: EvalConfig, splits: tuple[str, ...]) -> dict[str, Any]:
        """evaluate_model on `splits`, the retain split on its first train.eval_retain_examples records
        (a second call on the same weights: their fingerprint is hashed once for both)."""
        from moe_unlearn.eval import evaluate_model, model_fingerprint

        def run(c: EvalConfig, on: tuple[str, ...], fp: str | None = None) -> dict[str, Any]:
            return evaluate_model(self.eval_model(), self.ctx.tokenizer, self.ctx.data, c, progress=False,
                                  splits=on, retrained=self.retrained, cache=self.eval_cache, fingerprint=fp)

        n = self.cfg.eval_retain_examples
        if n is None or "retain" not in splits:
            return run(cfg, splits)
        fp = model_fingerprint(self.eval_model()) if self.eval_cache is not None else None
        res = run(cfg, tuple(s for s in splits if s != "retain"), fp)
        res["retain"] = run(replace(cfg, max_examples=min(n, cfg.max_examples or n)), ("retain",), fp)["retain"]
        return res

    def eval_model(self) -> torch.nn.Module:
        """The model without its data-parallel wrapper (FSDP2 shards in place: same module)."""
        return self.accelerator.unwrap_model(self.ctx.model)

    def train(self) -> None:
        from tqdm.auto import tqdm

        ctx, cfg = self.ctx, self.cfg
        stop = GracefulStop()
        bar = tqdm(total=self.total, initial=ctx.step, desc=f"unlearn {self.config.method}", disable=not self.progress)
        # step 0 is evaluated too (where the trade-off curve starts); the original model may already meet the target
        done = bool(cfg.eval_every) and ctx.step == 0 and self.periodic_eval()
        ctx.model.train()
        with stop.installed():
            try:
                while not done and ctx.step < self.total:
                    if stop.agreed():  # at a step boundary: the state is consistent
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
        if self.retain_guard is not None:  # it judges the state training ends in: evaluate it
            if self.retain_guard.last is None or self.retain_guard.last[0] != ctx.step:
                self.periodic_eval()
            self.guarded = self.retain_guard.finish(self.trainable)

    def save_model(self, path: Path) -> torch.nn.Module:
        """model/ as a plain save_pretrained safetensors directory (full weights gathered from a
        sharded engine; LoRA merged); returns the model to evaluate."""
        acc = self.accelerator
        model = self.eval_model()
        if self.ctx.lora:
            model = model.merge_and_unload()
            state = model.state_dict()
        else:
            state = accel.full_state_dict(acc, self.ctx.model, self.slice_params)
        self.check_finite(model.named_parameters())
        # FSDP2: every process runs save_pretrained (its gathers are collective), the main one writes;
        # DeepSpeed gives the whole weights to the main process only (None elsewhere)
        if acc.is_main_process or (self.sharded and state is not None):
            model.save_pretrained(path, state_dict=state, safe_serialization=True, is_main_process=acc.is_main_process)
        if acc.is_main_process:
            self.ctx.tokenizer.save_pretrained(path)
        barrier()
        return model


def _warn_overlap(fmt: str, data: UnlearnData) -> None:
    """One warning line when forget records are retain records too: the run is asked to forget
    and to keep the same examples, so what it does to them tells nothing (a wrong file, a split
    made twice). It still trains: a small overlap may be intended."""
    forget = getattr(data.train_split("forget"), fmt) or []
    shared = shared_records(forget, getattr(data.train_split("retain"), fmt) or [], fmt)
    if shared:
        same = " and ".join(TRAINED_FIELDS[fmt])
        warn(f"{shared} of the {len(forget)} forget records are also in the retain set (same {same}); "
             "the run both forgets and keeps them: remove them from one of the sets")


# ---- public API ---------------------------------------------------------------------------
def run_unlearning(cfg: UnlearnConfig, *, out_dir: str | Path, overwrite: bool = False,
                   resume: bool = False, progress: bool = True, retrained: dict[str, Any] | None = None,
                   eval_cache: EvalCache | None = None) -> dict[str, Any]:
    """Run one unlearning job into out_dir and return its metrics (also metrics.json).

    retrained: metrics of a retain-only model evaluated like this run (PrivLeak, forget quality,
    oracle_distance), e.g. `benchmark.oracle.oracle_metrics`. eval_cache: results, encodings
    and routing captures of earlier evaluations of the same data (e.g. the original model's, which
    step 0 evaluates again and the final evaluation compares routing with); the run adds its own
    (one process). Under a launcher (accelerate
    launch, torchrun) every process runs this; the main process writes the files and every
    process returns the same metrics.
    """
    from moe_unlearn.eval import evaluate_model

    t_start = time.perf_counter()
    out = Path(out_dir)
    trainer = Trainer.create(cfg, out, progress=progress, overwrite=overwrite, resume=resume, eval_cache=eval_cache)
    with trainer.run_dir.released():  # the lock on out_dir, however the run ends
        ctx = trainer.ctx
        trainer.forget_target, trainer.retrained = oracle_target(retrained), retrained
        trainer.train()

        for a in trainer.adapters:
            a.after_training(ctx)
        failed: list[BaseException] = []

        def publish(folder: Path) -> dict[str, Any]:
            """model/'s weights, the evaluation of them, then the model card, all inside the atomic
            publish of model/: it appears with its card, which says so when evaluation failed."""
            model = trainer.save_model(folder)
            try:
                results = evaluate_model(model, ctx.tokenizer, ctx.data, trainer.config.eval,
                                         original_routing=trainer.original_routing, retrained=retrained,
                                         progress=trainer.progress, cache=trainer.eval_cache)
            except BaseException as e:  # the trained model is kept; the error is raised once it is published
                failed.append(e)
                if is_main():
                    write_model_card(folder, cfg, {"steps": ctx.step}, ctx.data, failure=_failure_words(e))
                return {}
            metrics = _run_metrics(cfg, trainer, results, t_start)
            if is_main():
                write_model_card(folder, cfg, metrics, ctx.data)
            return metrics

        metrics = trainer.run_dir.save_model(publish, trainer.last_checkpoint)  # model/ appears complete
        if failed:
            raise failed[0]
        if is_main():
            trainer.run_dir.write_metrics(metrics, _json_default)
        if cfg.train.log_with:
            trainer.accelerator.log(tracking.scalars(metrics, "final/"), step=ctx.step)
            trainer.accelerator.end_training()
        barrier()
        return metrics


def _run_metrics(cfg: UnlearnConfig, trainer: Trainer, results: dict[str, Any], t_start: float) -> dict[str, Any]:
    """metrics.json of a finished run: what ran, the evaluation results, timing and memory."""
    return run_metrics(
        results,
        method=cfg.method,
        adapters=list(cfg.adapters),
        benchmark=cfg.benchmark,
        steps=trainer.ctx.step,
        timing=timing(time.perf_counter() - t_start, trainer.step_seconds),
        memory={
            "trainable_params": trainer.trainable.numel(),
            "reference_bytes": trainer.reference_bytes,
            "optimizer_state_bytes": optimizer_state_bytes(trainer.optimizer),
        },
        processes=world_size(),
        adapter_info={a.name: a.summary() for a in trainer.adapters},
        early_stop=trainer.stopped_early,
        retain_guard=trainer.guarded,
        resumed=trainer.resumed,
    )


def _failure_words(e: BaseException) -> str:
    """A failed evaluation in a few words for the model card (no machine path: the error's kind
    and, for a user's mistake or a failed run, its first clause)."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    first = str(e).split(";")[0].split(" /")[0].strip() if isinstance(e, (UserError, RunFailure)) else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values()
               for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0)


def _json_default(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON-able: {type(x).__name__}")


__all__ = ["Trainer", "run_unlearning", "build_trainable", "forward_spec"]
