"""The demo: build or reuse the embedded benchmark, run methods x adapters, write a report.

Every run shares one budget (steps, batch, early-stopping target, evaluation) so the comparison
is fair; only each method's own learning rate differs. Runs whose combination is undefined
(TRACE without a retain term) are listed as skipped, not silently dropped.

Every run is read between two reference rows, evaluated with the same eval settings and written
to DIR/reference/<name>/metrics.json: the original model, and (oracle=True) the retrain oracle
(the base recipe without the forget set, `benchmark.oracle`), which is also every run's
`retrained` reference (PrivLeak's retrained AUC, forget quality, distance to the oracle).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moe_unlearn.benchmark import cached_benchmark
from moe_unlearn.benchmark.cache import cache_root, entry_name
from moe_unlearn.benchmark.oracle import cached_oracle, reference_metrics
from moe_unlearn.config import apply_overrides, load_yaml, merge_config, require
from moe_unlearn.data import load_data
from moe_unlearn.errors import UserError
from moe_unlearn.eval.context import EvalCache
from moe_unlearn.paths import LOCK_NAME, DirLock, atomic_write, check_destination
from moe_unlearn.recipes.jobs import cpu_threads, default_jobs, run_jobs
from moe_unlearn.registry import suggest
from moe_unlearn.report import load_runs, write_report
from moe_unlearn.report.aggregate import summarise
from moe_unlearn.report.runs import demo_run_dir
from moe_unlearn.train.config import TrainConfig, build_config
from moe_unlearn.train.engine import run_unlearning

DEMO_SPEC = Path(__file__).with_name("demo.yaml")
SPEC_KEYS = ("preset", "matrix", "quick", "common", "adapter_lr_scale", "methods")


@dataclass(frozen=True)
class DemoRun:
    method: str
    adapters: tuple[str, ...]

    @property
    def label(self) -> str:
        return "+".join((self.method, *self.adapters))


def load_spec(overrides: list[str] | None = None) -> dict[str, Any]:
    """The packaged demo spec with dotted overrides applied."""
    return apply_overrides(load_yaml(DEMO_SPEC), overrides or [])


def check_spec(spec: dict[str, Any], *, quick: bool) -> None:
    """Every key of the spec, so every override, must be known and valid before anything runs,
    as `unlearn` checks its own: a typo (comon.train.lr=...) is an error, never ignored."""
    from moe_unlearn.adapters import ADAPTERS
    from moe_unlearn.benchmark.presets import PRESETS
    from moe_unlearn.methods import METHODS

    for key in spec:
        require(key in SPEC_KEYS, f"unknown demo key '{key}'{suggest(str(key), list(SPEC_KEYS))}")
    PRESETS.get(str(spec.get("preset", "default")))
    for name in ("matrix", "quick"):
        grid = spec.get(name)
        require(isinstance(grid, dict), f"demo '{name}' must map methods and adapters")
        for key in grid:
            require(key in ("methods", "adapters"), f"unknown demo key '{name}.{key}'"
                                                    f"{suggest(str(key), ['methods', 'adapters'])}")
        methods, combos = grid.get("methods"), grid.get("adapters")
        require(isinstance(methods, list) and bool(methods), f"demo '{name}.methods' must be a list of methods")
        require(isinstance(combos, list) and bool(combos) and all(isinstance(c, list) for c in combos),
                f"demo '{name}.adapters' must be a list of adapter lists, e.g. [[], [grip]]")
        for m in methods:
            METHODS.get(str(m))
        for combo in combos:
            for a in combo:
                ADAPTERS.get(str(a))
    scales = spec.get("adapter_lr_scale", {})
    require(isinstance(scales, dict), "demo 'adapter_lr_scale' must map adapters to numbers")
    for a, factor in scales.items():
        ADAPTERS.get(str(a))
        factors = factor if isinstance(factor, dict) else {None: factor}
        for m, f in factors.items():
            where = f"adapter_lr_scale.{a}" + ("" if m is None else f".{m}")
            if m is not None:
                METHODS.get(str(m))
            require(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1e6,
                    f"demo '{where}' must be a positive number, got {f!r}")
    per_method = spec.get("methods", {})
    require(isinstance(per_method, dict), "demo 'methods' must map methods to their settings")
    require(isinstance(spec.get("common"), dict), "demo 'common' must be an unlearn config mapping")
    first = spec["quick" if quick else "matrix"]["methods"][0]
    sections = [("common", str(first), {})] + [(f"methods.{m}", str(m), extra) for m, extra in per_method.items()]
    for where, method, extra in sections:
        METHODS.get(method)
        require(isinstance(extra, dict), f"demo '{where}' must be a mapping")
        try:
            build_config(merge_config(merge_config(spec["common"], extra), {"method": method}))
        except UserError as e:
            raise UserError(f"demo '{where}': {e}") from None


def plan(spec: dict[str, Any], *, quick: bool) -> list[DemoRun]:
    grid = spec["quick" if quick else "matrix"]
    return [DemoRun(m, tuple(a)) for m in grid["methods"] for a in grid["adapters"]]


def adapter_lr_scale(spec: dict[str, Any], adapter: str, method: str) -> float:
    """The factor an adapter applies to the method's learning rate: a number, or {method: number}
    (methods not named: 1)."""
    factor = spec.get("adapter_lr_scale", {}).get(adapter, 1)
    return float(factor.get(method, 1) if isinstance(factor, dict) else factor)


def run_config(spec: dict[str, Any], run: DemoRun, manifest: Path, seed: int) -> dict[str, Any]:
    """The raw unlearn config of one run: common budget + the method's own settings."""
    raw = merge_config(spec["common"], spec.get("methods", {}).get(run.method, {}))
    raw = merge_config(raw, {"method": run.method, "adapters": list(run.adapters), "seed": seed,
                             "data": {"manifest": str(manifest)}})
    lr = float(raw.get("train", {}).get("lr", TrainConfig.lr))
    for name in run.adapters:
        lr *= adapter_lr_scale(spec, name, run.method)
    return merge_config(raw, {"train": {"lr": lr}})


def run_demo(out_dir: str | Path, *, quick: bool = False, seed: int = 0, seeds: int = 1,
             forget_domain: str | None = None, overrides: list[str] | None = None, progress: bool = True,
             oracle: bool = True, jobs: int | None = None,
             on_result: Callable[[DemoRun, dict[str, Any] | None, str | None], None] | None = None,
             on_reference: Callable[[str, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run the demo matrix into out_dir for unlearning seeds seed .. seed + seeds - 1 on the benchmark
    built with `seed`; returns results.json's list (one metrics dict per run, with "run" and "seed").

    oracle: build (or reuse) the retrain oracle and evaluate every run against it (without it,
    forgetting is judged against the holdout split). jobs: runs at once in worker processes
    (None: 2 on a CPU with 2 or more cores, else 1), the CPU's threads shared between them."""
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    spec = load_spec(overrides)
    check_spec(spec, quick=quick)
    entry = cache_root() / entry_name(spec.get("preset", "default"), seed, forget_domain, 1.0)
    out = check_destination(out_dir, [("benchmark cache entry", entry)], kind="dir")
    if out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()) and not (out / "results.json").exists():
        raise UserError(f"output directory {out_dir} is not empty and holds no demo results; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    lock = DirLock.acquire(out, "demo dir")
    try:
        return _run_demo(out, spec, quick=quick, seed=seed, seeds=seeds, forget_domain=forget_domain,
                         progress=progress, oracle=oracle, jobs=jobs, on_result=on_result,
                         on_reference=on_reference)
    finally:
        lock.release()


def _run_demo(out: Path, spec: dict[str, Any], *, quick: bool, seed: int, seeds: int, forget_domain: str | None,
              progress: bool, oracle: bool, jobs: int | None,
              on_result: Callable[[DemoRun, dict[str, Any] | None, str | None], None] | None,
              on_reference: Callable[[str, dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    # the first call builds the benchmark (minutes): always show its progress bars
    manifest = cached_benchmark(preset=spec.get("preset", "default"), seed=seed, forget_domain=forget_domain,
                                progress=True)
    bench_seconds = time.perf_counter() - t0
    runs = plan(spec, quick=quick)

    t1 = time.perf_counter()
    if oracle:  # training it (minutes) shows its progress bars, as the benchmark build does
        cached_oracle(manifest, progress=True)
    oracle_seconds = time.perf_counter() - t1
    first = build_config(run_config(spec, runs[0], manifest, seed))  # every run shares data and eval settings
    cache = EvalCache()  # the original model's results: every run evaluates it again at step 0
    refs = reference_metrics(manifest, load_data(first.data), first.eval, oracle=oracle, cache=cache)
    references = [("original", refs.original)] + ([("oracle", refs.oracle)] if refs.oracle else [])
    for name, metrics in references:
        (out / "reference" / name).mkdir(parents=True, exist_ok=True)
        _write_json(out / "reference" / name / "metrics.json", metrics)
        if on_reference:
            on_reference(name, metrics)
    reference_seconds = time.perf_counter() - t1

    run_seeds = list(range(seed, seed + seeds))
    todo: list[tuple[DemoRun, int, Path, dict[str, Any]]] = []
    skipped: list[dict[str, str]] = []
    for run_seed in run_seeds:
        for run in runs:
            if any(s["run"] == run.label for s in skipped):
                continue  # refused for the first seed already (the reason does not depend on the seed)
            raw = run_config(spec, run, manifest, run_seed)
            try:
                build_config(raw)
            except UserError as e:  # an undefined combination, e.g. TRACE with a method without retain term
                skipped.append({"run": run.label, "reason": str(e)})
                if on_result:
                    on_result(run, None, str(e))
                continue
            todo.append((run, run_seed, demo_run_dir(out, run.label, run_seed, seed), raw))

    finished: dict[int, dict[str, Any]] = {}

    def done(i: int, metrics: dict[str, Any]) -> None:
        run, run_seed, _, _ = todo[i]
        metrics["run"], metrics["seed"] = run.label, run_seed
        finished[i] = metrics
        _write_json(out / "results.json", [finished[k] for k in sorted(finished)])
        if on_result:
            on_result(run, metrics, None)

    device = str(build_config(todo[0][3]).model.device) if todo else "cpu"
    n_jobs = default_jobs(device) if jobs is None else jobs
    threads = max(1, cpu_threads() // max(1, n_jobs))
    tasks = [(raw, str(target), refs.retrained, progress, cache) for _, _, target, raw in todo]
    results = run_jobs(_unlearn, tasks, jobs=n_jobs, threads=threads, on_done=done, start_order=start_order(todo))
    dirs = [target for _, _, target, _ in todo]

    _write_json(out / "results.json", results)
    _write_json(out / "summary.json", {"seeds": run_seeds, "cells": summarise(load_runs(dirs))})
    _write_json(out / "demo.json", {"manifest": str(manifest), "quick": quick, "seed": seed, "seeds": run_seeds,
                                    "oracle": oracle, "jobs": n_jobs, "threads_per_job": threads,
                                    "benchmark_seconds": bench_seconds,
                                    "oracle_build_seconds": oracle_seconds, "reference_seconds": reference_seconds,
                                    "total_seconds": time.perf_counter() - t0, "skipped": skipped})
    write_report([out / "reference" / name for name, _ in references] + dirs, out / "report")
    return results


def start_order(todo: list[tuple[DemoRun, int, Path, dict[str, Any]]]) -> list[int]:
    """Runs with more adapters first (each adds work to every step or a preparation), so the
    longest runs start early and the shortest fill the last worker's tail; plan order otherwise."""
    return sorted(range(len(todo)), key=lambda i: -len(todo[i][0].adapters))


def _unlearn(task: tuple[dict[str, Any], str, dict[str, Any] | None, bool, EvalCache]) -> dict[str, Any]:
    """One run of the matrix (in a worker process when the demo runs jobs in parallel)."""
    raw, target, retrained, progress, cache = task
    if not progress:  # a spawned worker starts with transformers' bars on, whatever its parent set
        import transformers

        transformers.utils.logging.disable_progress_bar()
    return run_unlearning(build_config(raw), out_dir=target, overwrite=True, progress=progress, retrained=retrained,
                          eval_cache=cache)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str))
