"""GRIP preparation time as a share of a whole unlearning run, with the demo recipe's budget."""

from __future__ import annotations

from bench.common import Env, Figure, sig
from moe_unlearn.recipes.demo import DemoRun, load_spec, run_config
from moe_unlearn.train import build_config
from moe_unlearn.train.engine import run_unlearning


def run(env: Env) -> list[Figure]:
    steps = env.settings.demo_steps  # None: the demo's own budget; smoke: fewer steps, smaller eval
    overrides = [] if steps is None else [f"common.train.max_steps={steps}",
                                          f"common.eval.max_examples={env.settings.eval_examples}"]
    raw = run_config(load_spec(overrides), DemoRun("ga", ("grip",)), env.manifest, seed=0)
    metrics = run_unlearning(build_config(raw), out_dir=env.work / "demo-ga-grip", overwrite=True, progress=False)
    grip = metrics["adapter_info"]["grip"]
    total = metrics["timing"]["total_seconds"]
    detail = {"prep_seconds": grip["prep_seconds"], "total_seconds": round(total, 3), "steps": metrics["steps"],
              "step_seconds_median": round(metrics["timing"]["step_seconds_median"], 4),
              "ptc_seconds": sum(r["seconds"] for r in grip["ptc"]), "cache_tokens": grip["cache_tokens"],
              "projector_bytes": grip["projector_bytes"], "mode": grip["mode"]}
    return [Figure("GRIP preparation / total unlearning time (demo budget)", sig(grip["prep_seconds"] / total),
                   0.15, detail=detail)]
