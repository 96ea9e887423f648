"""The one bench entry point: every figure, one table (stdout) and bench/results/bench.json.

    python -m bench.run [--smoke] [--only NAME ...] [--threads N] [--out PATH]

Step figures train on the embedded benchmark (built and cached on first use). Absolute times
depend on the machine and its load; the ratios are what the targets judge.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import transformers

from bench import (capture, eval_throughput, full_depth, full_depth_gpu, grip_geometry, grip_modes, grip_prep, memory,
                   real_geometry, step_time)
from bench.common import SETTINGS, Env, Figure
from moe_unlearn.benchmark import cached_benchmark

# name -> module with run(env) -> list[Figure], in table order
GROUPS: dict[str, ModuleType] = {
    "steps": step_time,
    "capture": capture,
    "memory": memory,
    "grip_prep": grip_prep,
    "grip_geometry": grip_geometry,
    "grip_modes": grip_modes,
    "eval": eval_throughput,
    "real_geometry": real_geometry,
    "full_depth": full_depth,
    "full_depth_gpu": full_depth_gpu,
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench.json"


def machine(threads: int) -> dict[str, Any]:
    """Where and under what load the numbers were taken."""
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def table(figures: list[Figure]) -> str:
    """Markdown table: figure | measured | target | pass."""
    lines = ["| figure | measured | target | pass |", "|---|---|---|---|"]
    for f in figures:
        target = "report" if f.target is None else f"{f.op} {f.target:g}"
        verdict = {True: "pass", False: "FAIL", None: "-"}[f.passed]
        unit = "" if f.unit == "ratio" else f" {f.unit}"
        lines.append(f"| {f.name} | {f.measured:.4g}{unit} | {target} | {verdict} |")
    return "\n".join(lines)


def run_bench(mode: str, *, only: list[str] | None = None, threads: int = 1, out: Path = DEFAULT_OUT,
              manifest: Path | None = None) -> dict[str, Any]:
    """Run the figures of `only` (default all) in `mode` ("full" | "smoke") on `threads` torch
    threads; write and return the JSON. The caller's thread count comes back afterwards (a test
    session's later runs must sum in its order)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_bench(mode, only=only, threads=threads, out=out, manifest=manifest)
    finally:
        torch.set_num_threads(before)


def _run_bench(mode: str, *, only: list[str] | None, threads: int, out: Path, manifest: Path | None) -> dict[str, Any]:
    settings = SETTINGS[mode]
    groups = only or list(GROUPS)
    t0 = time.perf_counter()
    start_load = machine(threads)
    if manifest is None and any(getattr(GROUPS[name], "NEEDS_BENCHMARK", True) for name in groups):
        manifest = cached_benchmark(settings.preset, seed=0)  # minutes on CPU the first time
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-bench-") as work:
        env = Env(settings=settings, manifest=Path(manifest) if manifest else None, work=Path(work))
        for name in groups:
            g0 = time.perf_counter()
            new = GROUPS[name].run(env)
            for f in new:
                f.detail.setdefault("group", name)
            figures += new
            print(f"[bench] {name}: {len(new)} figure(s) in {time.perf_counter() - g0:.1f} s", file=sys.stderr)
    result = {
        "mode": mode, "preset": settings.preset, "machine": start_load,
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "figures": [f.row() for f in figures],
        "table": table(figures),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the plumbing in seconds, not the targets")
    p.add_argument("--only", nargs="+", choices=list(GROUPS), help="run only these figure groups")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (fixed for the whole run)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    p.add_argument("--manifest", type=Path, help="benchmark manifest to use instead of the cached preset")
    args = p.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()  # one table, not a wall of loading bars
    result = run_bench("smoke" if args.smoke else "full", only=args.only, threads=args.threads,
                       out=args.out, manifest=args.manifest)
    print(result["table"])
    print(f"\n{result['machine']['device']}, {result['machine']['torch_threads']} torch thread(s), "
          f"load {result['machine']['load_average']} -> {result['load_average_end']}; {result['seconds']} s; "
          f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
