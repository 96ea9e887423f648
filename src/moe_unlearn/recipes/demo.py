"""The demo: build or reuse the embedded benchmark, run methods x adapters, write a report.

Every run shares one budget (steps, batch, early-stopping target, evaluation) so the comparison
is fair; only each method's own learning rate differs. Runs whose combination is undefined
(TRACE without a retain term) are listed as skipped, not silently dropped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from moe_unlearn.benchmark import cached_benchmark
from moe_unlearn.config import apply_overrides
from moe_unlearn.errors import UserError
from moe_unlearn.report import load_runs, write_report
from moe_unlearn.report.aggregate import summarise
from moe_unlearn.train.config import merge_config, build_config
from moe_unlearn.train.engine import run_unlearning

DEMO_SPEC = Path(__file__).with_name("demo.yaml")


@dataclass(frozen=True)
class DemoRun:
    method: str
    adapters: tuple[str, ...]

    @property
    def label(self) -> str:
        return "+".join((self.method, *self.adapters))


def load_spec(overrides: list[str] | None = None) -> dict[str, Any]:
    """The packaged demo spec with dotted overrides applied."""
    return apply_overrides(yaml.safe_load(DEMO_SPEC.read_text()), overrides or [])


def plan(spec: dict[str, Any], *, quick: bool) -> list[DemoRun]:
    grid = spec["quick" if quick else "matrix"]
    return [DemoRun(m, tuple(a)) for m in grid["methods"] for a in grid["adapters"]]


def run_config(spec: dict[str, Any], run: DemoRun, manifest: Path, seed: int) -> dict[str, Any]:
    """The raw unlearn config of one run: common budget + the method's own settings."""
    raw = merge_config(spec["common"], spec.get("methods", {}).get(run.method, {}))
    raw = merge_config(raw, {"method": run.method, "adapters": list(run.adapters), "seed": seed,
                             "data": {"manifest": str(manifest)}})
    lr = float(raw["train"]["lr"])
    for name in run.adapters:
        lr *= spec.get("adapter_lr_scale", {}).get(name, 1)
    return merge_config(raw, {"train": {"lr": lr}})


def run_dir(out: Path, run: DemoRun, seed: int, first_seed: int) -> Path:
    """runs/<label> for the first seed (the layout of a one-seed demo), runs/seed-<s>/<label> after it."""
    return out / "runs" / run.label if seed == first_seed else out / "runs" / f"seed-{seed}" / run.label


def run_demo(out_dir: str | Path, *, quick: bool = False, seed: int = 0, seeds: int = 1,
             forget_domain: str | None = None, overrides: list[str] | None = None, progress: bool = True,
             on_result: Callable[[DemoRun, dict[str, Any] | None, str | None], None] | None = None) -> list[dict[str, Any]]:
    """Run the demo matrix into out_dir for unlearning seeds seed .. seed + seeds - 1 on the benchmark
    built with `seed`; returns results.json's list (one metrics dict per run, with "run" and "seed")."""
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "results.json").exists():
        raise UserError(f"output directory {out} is not empty and holds no demo results; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    spec = load_spec(overrides)
    t0 = time.perf_counter()
    # the first call builds the benchmark (minutes): always show its progress bars
    manifest = cached_benchmark(preset=spec.get("preset", "default"), seed=seed, forget_domain=forget_domain,
                                progress=True)
    bench_seconds = time.perf_counter() - t0

    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    dirs: list[Path] = []
    run_seeds = list(range(seed, seed + seeds))
    for run_seed in run_seeds:
        for run in plan(spec, quick=quick):
            if run_seed != seed and any(s["run"] == run.label for s in skipped):
                continue  # refused for the first seed already (the reason does not depend on the seed)
            target = run_dir(out, run, run_seed, seed)
            try:
                cfg = build_config(run_config(spec, run, manifest, run_seed))
                metrics = run_unlearning(cfg, out_dir=target, overwrite=True, progress=progress)
            except UserError as e:  # an undefined combination, e.g. TRACE with a method without retain term
                skipped.append({"run": run.label, "reason": str(e)})
                if on_result:
                    on_result(run, None, str(e))
                continue
            metrics["run"], metrics["seed"] = run.label, run_seed
            results.append(metrics)
            dirs.append(target)
            if on_result:
                on_result(run, metrics, None)
            _write_json(out / "results.json", results)

    _write_json(out / "results.json", results)
    _write_json(out / "summary.json", {"seeds": run_seeds, "cells": summarise(load_runs(dirs))})
    _write_json(out / "demo.json", {"manifest": str(manifest), "quick": quick, "seed": seed, "seeds": run_seeds,
                                    "benchmark_seconds": bench_seconds,
                                    "total_seconds": time.perf_counter() - t0, "skipped": skipped})
    write_report(dirs, out / "report")
    return results


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)
