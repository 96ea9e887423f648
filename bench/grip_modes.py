"""GRIP's memory modes on the embedded benchmark: step overhead, retained stability, forgetting.

Modes: per-expert bases (the paper; default), one shared span per layer, bfloat16 bases (fp32
arithmetic), bases offloaded to host memory (on a CPU run the same arithmetic as the default:
the figure then shows only that nothing is lost on the way). Step ratios: one interleaved set,
GA and GA+GRIP in every mode (steps as in `steps`). Stability and forgetting: the demo recipe's
GA+GRIP run (its budget and early stop) in each mode; retained stability = the share of the
original top-k experts still chosen on retain tokens, forgetting = forget MC accuracy (chance
0.25) and answer NLL.
"""

from __future__ import annotations

from bench.common import Env, Figure, interleaved, median_ms, paired_ratio, sig
from bench.session import sync_for, trainer_for
from moe_unlearn.recipes.demo import DemoRun, load_spec, run_config
from moe_unlearn.train import build_config
from moe_unlearn.train.engine import run_unlearning

MODES = {
    "per-expert (default)": [],
    "shared span": ["grip.span=shared"],
    "per-expert, bfloat16 bases": ["grip.basis_dtype=bfloat16"],
    "per-expert, offloaded bases": ["grip.offload_bases=true"],
}


def _get(metrics: dict, *keys: str) -> float | None:
    for k in keys:
        metrics = metrics.get(k) if isinstance(metrics, dict) else None
    return metrics


def demo_run(env: Env, tag: str, overrides: list[str]) -> dict:
    steps = env.settings.demo_steps
    spec_overrides = [] if steps is None else [f"common.train.max_steps={steps}",
                                               f"common.eval.max_examples={env.settings.eval_examples}"]
    raw = run_config(load_spec(spec_overrides), DemoRun("ga", ("grip",)), env.manifest, seed=0)
    raw["grip"] = {o.split("=")[0].removeprefix("grip."): o.split("=")[1] for o in overrides}
    for key, value in raw["grip"].items():  # YAML-typed like a command-line override
        raw["grip"][key] = {"true": True, "false": False}.get(value, value)
    return run_unlearning(build_config(raw), out_dir=env.work / f"grip-mode-{tag}", overwrite=True, progress=False)


def run(env: Env) -> list[Figure]:
    s = env.settings
    base = trainer_for(env.manifest, env.work / "modes-base", "ga", [])
    trainers = {name: trainer_for(env.manifest, env.work / f"modes-{i}", "ga", ["grip"], overrides)
                for i, (name, overrides) in enumerate(MODES.items())}
    times = interleaved({"base": base.step, **{n: t.step for n, t in trainers.items()}}, repeats=s.repeats,
                        warmup=s.warmup, sync=sync_for(base))
    figures = []
    for i, (name, overrides) in enumerate(MODES.items()):
        summary = trainers[name].adapters[0].summary()
        metrics = demo_run(env, str(i), overrides)
        energy = [e for layer in summary["protected_energy"] for e in layer]
        detail = {"overrides": overrides, "base_ms": median_ms(times["base"]), "grip_ms": median_ms(times[name]),
                  "project_ms_per_step": summary["project_ms_per_step"], "projector_bytes": summary["projector_bytes"],
                  "projector_device_bytes": summary["projector_device_bytes"],
                  "protected_energy_mean": round(sum(energy) / len(energy), 5),
                  "null_dim": summary["null_dim"],
                  "demo_run": {"steps": metrics["steps"],
                               "retain_stability": _get(metrics, "routing", "stability", "retain"),
                               "forget_mc_acc": _get(metrics, "forget", "mc_acc"),
                               "forget_nll": _get(metrics, "forget", "nll"),
                               "retain_mc_acc": _get(metrics, "retain", "mc_acc"),
                               "retain_nll": _get(metrics, "retain", "nll")}}
        run_ = detail["demo_run"]
        figures += [
            Figure(f"GRIP mode {name}: GA+GRIP step / GA step", sig(paired_ratio(times, name, "base")), 1.10,
                   detail=detail),
            Figure(f"GRIP mode {name}: retained stability (demo GA+GRIP run)", sig(run_["retain_stability"]), None,
                   op="report", detail={"mode": name}),
            Figure(f"GRIP mode {name}: forget MC accuracy (demo GA+GRIP run, chance 0.25)", sig(run_["forget_mc_acc"]),
                   None, op="report", detail={"mode": name}),
        ]
    return figures
