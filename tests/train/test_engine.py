"""The engine end to end on the tiny benchmark: outputs, determinism, resume, divergence, stops."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from moe_unlearn.errors import RunFailure, UserError
from moe_unlearn.train import run_unlearning
from moe_unlearn.train.engine import Trainer

from train_helpers import kill_after_first_checkpoint


def numbers(metrics: dict) -> dict:
    """The metrics that must be reproducible (timing and bookkeeping dropped)."""
    return {k: v for k, v in metrics.items() if k not in ("timing", "eval_seconds", "resumed")}


def read_log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_run_writes_documented_outputs(run_config, tmp_path):
    _, cfg = run_config()
    out = tmp_path / "run"
    metrics = run_unlearning(cfg, out_dir=out, progress=False)
    assert {"model", "checkpoints", "config.yaml", "log.jsonl", "metrics.json"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["method"] == "graddiff" and saved["adapters"] == [] and saved["steps"] == 4
    for split in ("forget", "retain", "holdout"):
        assert saved[split]["nll"] > 0 and 0 <= saved[split]["mc_acc"] <= 1
    assert 0 < saved["routing"]["stability"]["retain"] <= 1 and 0 < saved["routing"]["stability"]["forget"] <= 1
    assert saved["timing"]["step_seconds_median"] > 0 and saved["timing"]["total_seconds"] > 0
    assert saved["adapter_info"] == {} and saved["memory"]["reference_bytes"] == 0
    log = read_log(out)
    assert [x["step"] for x in log] == [1, 2, 3, 4]
    assert all({"loss", "forget_loss", "retain_loss", "lr", "grad_norm", "seconds"} <= set(x) for x in log)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000004"]
    model = AutoModelForCausalLM.from_pretrained(out / "model")  # plain transformers
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    assert metrics["forget"]["nll"] == saved["forget"]["nll"]
    assert sum(p.numel() for p in model.parameters()) == metrics["memory"]["trainable_params"]


def test_same_seed_same_numbers_other_seed_other_numbers(run_config, tmp_path):
    _, cfg = run_config()
    a = run_unlearning(cfg, out_dir=tmp_path / "a", progress=False)
    b = run_unlearning(cfg, out_dir=tmp_path / "b", progress=False)
    assert numbers(a) == numbers(b)
    _, other = run_config("seed=1")
    c = run_unlearning(other, out_dir=tmp_path / "c", progress=False)
    assert c["forget"]["nll"] != a["forget"]["nll"]


def test_sigterm_checkpoints_then_resume_matches_uninterrupted(run_config, tmp_path, monkeypatch):
    _, cfg = run_config("train.max_steps=6", "train.checkpoint_every=0")
    full = run_unlearning(cfg, out_dir=tmp_path / "full", progress=False)

    real_step = Trainer.step

    def step_then_sigterm(self):
        record = real_step(self)
        if self.ctx.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return record

    monkeypatch.setattr(Trainer, "step", step_then_sigterm)
    out = tmp_path / "cut"
    with pytest.raises(RunFailure, match="interrupted after step 3.*--resume"):
        run_unlearning(cfg, out_dir=out, progress=False)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000003"]
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(Trainer, "step", real_step)
    with pytest.raises(UserError, match="not empty"):
        run_unlearning(cfg, out_dir=out, progress=False)
    resumed = run_unlearning(cfg, out_dir=out, resume=True, progress=False)
    assert resumed["resumed"] is True
    assert numbers(resumed) == numbers(full)
    assert [x["step"] for x in read_log(out)] == [1, 2, 3, 4, 5, 6]
    assert read_log(out) == [dict(x, seconds=y["seconds"]) for x, y in zip(read_log(tmp_path / "full"), read_log(out))]


def test_resume_after_kill_9_matches_uninterrupted(run_config, tmp_path):
    """A subprocess killed with SIGKILL after its first checkpoint, resumed here: same numbers."""
    path, cfg = run_config("train.max_steps=30", "train.checkpoint_every=2", "train.lr=3e-4")
    out = tmp_path / "killed"
    kill_after_first_checkpoint("unlearn", path, out)
    assert len(read_log(out)) < 30

    resumed = run_unlearning(cfg, out_dir=out, resume=True, progress=False)
    uninterrupted = run_unlearning(cfg, out_dir=tmp_path / "full", progress=False)
    assert resumed["resumed"] is True and resumed["steps"] == 30
    assert numbers(resumed) == numbers(uninterrupted)
    assert [x["step"] for x in read_log(out)] == list(range(1, 31))


def _finite_checkpoint(path: Path) -> bool:
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(t).all()) for t in load_file(path / "trainable.safetensors").values())


def test_divergence_stops_cleanly_and_keeps_last_checkpoint(run_config, tmp_path):
    """lr 1e19 with weight decay 1 multiplies every weight by -1e19 per step: finite after step 1
    (|w| ~ 1e19), and past float32's 3.4e38 by step 3 on any CPU, so the run must stop at step 2
    or 3 (loss, gradient or the update check) with the step before it kept, finite."""
    _, cfg = run_config("train.lr=1e19", "train.weight_decay=1.0", "train.max_steps=30", "train.checkpoint_every=1",
                        "train.max_grad_norm=null", method="ga")
    out = tmp_path / "div"
    with pytest.raises(RunFailure, match=r"at step (\d+): training diverged; the last good checkpoint") as err:
        run_unlearning(cfg, out_dir=out, progress=False)
    step = int(str(err.value).split("at step ")[1].split(":")[0])
    assert step in (2, 3)
    kept = [p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")]
    assert kept == [f"step-{step - 1:06d}"]
    assert _finite_checkpoint(out / "checkpoints" / kept[0])
    assert not (out / "metrics.json").exists() and not (out / "model").exists()


def test_non_finite_last_update_is_never_saved(run_config, tmp_path):
    """Weight decay lr x wd = 1e60 (beyond float32) turns every trained weight into inf/NaN in the
    only step; that step's loss and gradient were finite, so only the check of the last update
    can stop the save."""
    _, cfg = run_config("train.lr=1e30", "train.weight_decay=1e30", "train.max_steps=1", "train.checkpoint_every=0",
                        method="ga")
    out = tmp_path / "last"
    with pytest.raises(RunFailure, match=r"parameter '.*' is not finite after the update at step 1: training "
                                         r"diverged; no checkpoint was written yet"):
        run_unlearning(cfg, out_dir=out, progress=False)
    assert not (out / "metrics.json").exists() and not (out / "model").exists()
    assert not list(out.glob(".model*"))


def test_injected_nan_stops_at_that_step(run_config, tmp_path, monkeypatch):
    from moe_unlearn.methods.graddiff import GradDiff

    real = GradDiff.forget_loss

    def nan_at_step_3(self, ctx, forget):
        loss, logs = real(self, ctx, forget)
        return (loss * float("nan") if ctx.step == 2 else loss), logs

    monkeypatch.setattr(GradDiff, "forget_loss", nan_at_step_3)
    _, cfg = run_config("train.checkpoint_every=1")
    with pytest.raises(RunFailure, match=r"loss is nan at step 3: training diverged.*step-000002"):
        run_unlearning(cfg, out_dir=tmp_path / "nan", progress=False)


def test_early_stop_at_forget_target(run_config, tmp_path):
    _, cfg = run_config("train.max_steps=20", "train.eval_every=2", "train.early_stop.forget_nll_at_least=0.5",
                        method="ga")
    metrics = run_unlearning(cfg, out_dir=tmp_path / "es", progress=False)
    assert metrics["early_stop"] is not None and metrics["steps"] == metrics["early_stop"]["step"] < 20
    assert metrics["early_stop"]["forget"]["nll"] >= 0.5
    evals = [x for x in read_log(tmp_path / "es") if "eval" in x]
    assert [e["step"] for e in evals] == list(range(0, metrics["steps"] + 1, 2))  # step 0: the original model
    assert all(e["eval"]["forget"]["nll"] < 0.5 for e in evals[:-1])


def _scripted_retain(monkeypatch, values: list[float]) -> None:
    """The next len(values) evaluations report these retain MC values (then the real ones), so
    what the guard does does not depend on what training does to this tiny model."""
    import moe_unlearn.eval as ev

    real, scripted = ev.evaluate_model, list(values)

    def evaluate(*args, **kwargs):
        res = real(*args, **kwargs)
        if scripted:
            res["retain"]["mc_acc"] = scripted.pop(0)
        return res

    monkeypatch.setattr(ev, "evaluate_model", evaluate)


def test_retain_guard_restores_the_last_eval_above_its_floor(run_config, tmp_path, monkeypatch):
    """train.early_stop.retain_kept: a run that ends below the floor (0.9 x step 0's retain MC)
    saves the trained values of the last eval above it, weight for weight what a run stopped at
    that step saves; a dip the run recovers from (step 4) does not stop it."""
    from safetensors.torch import load_file

    _scripted_retain(monkeypatch, [1.0, 0.95, 0.5, 0.6])  # evals at steps 0, 2, 4, 6
    _, cfg = run_config("train.max_steps=6", "train.eval_every=2", "train.early_stop.retain_kept=0.9",
                        "train.checkpoint_every=0", method="ga")
    metrics = run_unlearning(cfg, out_dir=tmp_path / "guard", progress=False)
    assert metrics["steps"] == 6 and metrics["early_stop"] is None
    assert metrics["retain_guard"] == {"floor": pytest.approx(0.9), "final_step": 6, "retain_mc_acc": 0.6,
                                       "restored_step": 2}
    _, short = run_config("train.max_steps=2", "train.checkpoint_every=0", method="ga")
    run_unlearning(short, out_dir=tmp_path / "two", progress=False)
    guarded = load_file(tmp_path / "guard" / "model" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    assert guarded.keys() == two.keys() and all(torch.equal(guarded[k], two[k]) for k in two)
    _, six = run_config("train.max_steps=6", "train.checkpoint_every=0", method="ga")
    run_unlearning(six, out_dir=tmp_path / "six", progress=False)
    unguarded = load_file(tmp_path / "six" / "model" / "model.safetensors")
    assert any(not torch.equal(guarded[k], unguarded[k]) for k in two)  # the restore changed something


def test_retain_guard_keeps_a_run_that_ends_above_its_floor(run_config, tmp_path, monkeypatch):
    """Ending at or above the floor: nothing is restored (the final eval is run when the last step
    was not evaluated: max_steps 5, evals every 2)."""
    _scripted_retain(monkeypatch, [1.0, 0.5, 0.5, 0.95])  # evals at steps 0, 2, 4 and the final 5
    _, cfg = run_config("train.max_steps=5", "train.eval_every=2", "train.early_stop.retain_kept=0.9",
                        "train.checkpoint_every=0", method="ga")
    metrics = run_unlearning(cfg, out_dir=tmp_path / "kept", progress=False)
    assert metrics["retain_guard"]["final_step"] == 5 and metrics["retain_guard"]["restored_step"] is None
    evals = [x["step"] for x in read_log(tmp_path / "kept") if "eval" in x]
    assert evals == [0, 2, 4, 5]


def test_retain_guard_rejects_a_fraction_outside_0_1(run_config):
    with pytest.raises(UserError, match="retain_kept"):
        run_config("train.eval_every=2", "train.early_stop.retain_kept=1.5")


def test_bf16_grad_accum_epochs_and_cosine_warmup(run_config, tmp_path):
    # 40 forget examples, 4 per micro-batch, 2 micro-batches per step: 0.5 epoch = 3 steps
    _, cfg = run_config("train.precision=bf16", "train.grad_accum=2", "train.max_steps=null", "train.epochs=0.5",
                        "train.schedule=cosine", "train.warmup_steps=1")
    metrics = run_unlearning(cfg, out_dir=tmp_path / "bf16", progress=False)
    assert metrics["steps"] == 3
    log = read_log(tmp_path / "bf16")
    assert [x["lr"] for x in log] == pytest.approx([0.5e-3, 1e-3, 0.5e-3])
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in log)
    assert metrics["forget"]["nll"] > 0


def test_early_stop_when_forgotten_against_a_given_oracle(run_config, tmp_path):
    """early_stop.forgotten: stop at the first eval inside the reference's 95% interval (here a fake
    oracle whose forget NLL is ~0.6 on every item and whose MC is at chance)."""
    _, cfg = run_config("train.max_steps=20", "train.eval_every=2", "train.early_stop.forgotten=true", method="ga")
    n = 40
    oracle = {"forget": {"nll": 0.6}, "per_example": {"forget": {"nll": [0.55, 0.65] * (n // 2),
                                                                 "mc_acc": [1.0, 0.0, 0.0, 0.0] * (n // 4)}}}
    metrics = run_unlearning(cfg, out_dir=tmp_path / "es", progress=False, retrained=oracle)
    stop = metrics["early_stop"]
    assert stop is not None and stop["target"]["reference"] == "oracle" and metrics["steps"] == stop["step"] < 20
    assert stop["forget"]["nll"] >= stop["target"]["nll_at_least"] and stop["target"]["nll_at_least"] < 0.6
    evals = [x for x in read_log(tmp_path / "es") if "eval" in x]
    assert not any(e["eval"]["forget"]["nll"] >= stop["target"]["nll_at_least"]
                   and e["eval"]["forget"].get("mc_acc", 0) <= stop["target"]["mc_at_most"] for e in evals[:-1])


def test_gradients_are_freed_right_after_the_optimizer_step(run_config, tmp_path):
    """Between steps (evaluation, checkpoints, after_step) no trained parameter holds a gradient,
    while the step itself did produce and use them (the weights moved)."""
    _, cfg = run_config(method="ga")
    trainer = Trainer.create(cfg, tmp_path / "g", progress=False, overwrite=True, eval_routing=False)
    before = [t.detach().clone() for t in trainer.trainable.leaves()]
    trainer.step()
    leaves = list(trainer.trainable.leaves())
    assert leaves and all(t.grad is None for t in leaves)
    assert all(p.grad is None for p in trainer.ctx.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, leaves))


@pytest.mark.parametrize("oracle", [True, False])
def test_periodic_evals_score_the_holdout_only_when_it_judges_forgetting(run_config, tmp_path, monkeypatch, oracle):
    """With an oracle target the periodic evals read forget and retain only; the holdout is scored
    once, by the final eval. Without one the holdout is the target, so every eval scores it. The
    final eval reads the scores of the last periodic eval (step 4, the same weights) from the run's
    cache instead of scoring them again."""
    from moe_unlearn.eval.context import EvalContext
    from moe_unlearn.eval.forgotten import ForgetTarget

    calls: list[str] = []
    real = EvalContext.mc_loglik
    monkeypatch.setattr(EvalContext, "mc_loglik", lambda self, split: calls.append(split) or real(self, split))
    # never reached: this counts what each eval scores, whenever a trained model would forget
    monkeypatch.setattr(ForgetTarget, "reached", lambda self, forget: False)
    _, cfg = run_config("train.max_steps=4", "train.eval_every=2", "train.early_stop.forgotten=true", method="ga")
    n = 40
    fake = {"forget": {"nll": 50.0}, "per_example": {"forget": {"nll": [50.0] * n, "mc_acc": [0.0] * n}}}
    metrics = run_unlearning(cfg, out_dir=tmp_path / "p", progress=False, retrained=fake if oracle else None)
    evals = [x for x in read_log(tmp_path / "p") if "eval" in x]
    assert metrics["early_stop"] is None and len(evals) == 3  # steps 0, 2, 4: never forgotten
    assert calls.count("forget") == calls.count("retain") == len(evals)
    assert calls.count("holdout") == (1 if oracle else len(evals))


def test_periodic_evals_score_the_first_eval_retain_examples_retain_records(run_config, tmp_path, monkeypatch):
    """train.eval_retain_examples: each periodic eval scores the first N retain records (the
    values a run evaluating N records everywhere logs), while the forget scores, the early-stop
    judgement and the final evaluation equal a run without it; the weights are hashed for the
    cache's key as often as without it (once per eval, not once per evaluate_model call)."""
    import moe_unlearn.eval as ev
    import moe_unlearn.eval.context as ev_context

    hashed: list[str] = []
    real = ev_context.model_fingerprint
    for module in (ev, ev_context):
        monkeypatch.setattr(module, "model_fingerprint", lambda model: hashed.append("x") or real(model))
    base = ("train.max_steps=4", "train.eval_every=2", "train.checkpoint_every=0")
    _, cfg = run_config(*base, method="ga")
    _, sub = run_config(*base, "train.eval_retain_examples=8", method="ga")
    _, eight = run_config(*base, "eval.max_examples=8", method="ga")
    runs, hashes = {}, {}
    for name, c in (("all", cfg), ("sub", sub), ("eight", eight)):
        hashed.clear()
        runs[name] = run_unlearning(c, out_dir=tmp_path / name, progress=False)
        hashes[name] = len(hashed)
    assert hashes["all"] > 0 and hashes["sub"] == hashes["all"]
    logs = {name: [x for x in read_log(tmp_path / name) if "eval" in x] for name in runs}
    assert [e["step"] for e in logs["sub"]] == [0, 2, 4]
    assert [e["eval"]["retain"] for e in logs["sub"]] == [e["eval"]["retain"] for e in logs["eight"]]
    assert [e["eval"]["retain"]["nll"] for e in logs["sub"]] != [e["eval"]["retain"]["nll"] for e in logs["all"]]
    assert [e["eval"]["forget"] for e in logs["sub"]] == [e["eval"]["forget"] for e in logs["all"]]
    assert numbers(runs["sub"]) == numbers(runs["all"])


def test_eval_retain_examples_must_be_positive(run_config):
    with pytest.raises(UserError, match="eval_retain_examples"):
        run_config("train.eval_retain_examples=0")


def test_a_cache_of_the_original_models_evaluation_changes_no_number(run_config, tmp_path):
    """The demo hands every run the original model's evaluation: step 0 reads it (the weights are
    the original's), the run's capture of the original routing reads reference_metrics' and the
    final eval reads the last periodic eval (step 4, the same weights); every logged and saved
    number equals a run that scores and captures them all."""
    from moe_unlearn.benchmark.oracle import reference_metrics
    from moe_unlearn.data import load_data
    from moe_unlearn.eval import EvalCache

    _, cfg = run_config("train.eval_every=2", method="ga")
    plain = run_unlearning(cfg, out_dir=tmp_path / "plain", progress=False)
    cache = EvalCache()
    reference_metrics(cfg.data.manifest, load_data(cfg.data), cfg.eval, oracle=False, cache=cache)
    cached = run_unlearning(cfg, out_dir=tmp_path / "cached", progress=False, eval_cache=cache)
    assert cache.hits == 2 * 3 * 2 + 1  # (step 0 + final) x three splits x (nll, mc_acc), the routing
    assert numbers(cached) == numbers(plain)
    assert [{k: v for k, v in x.items() if k != "seconds"} for x in read_log(tmp_path / "cached")] == \
        [{k: v for k, v in x.items() if k != "seconds"} for x in read_log(tmp_path / "plain")]
