"""One prepared check for a GPU machine: prints one table (check | result | detail | seconds).

    bash scripts/gpu_check.sh        (the machine's own python3 with torch/CUDA and accelerate;
                                      PYTHONPATH=src; the tested transformers/peft and missing
                                      packages as wheels in .whl/, see scripts/gpu_wheels.sh)

Checks, each in its own process with its own time limit so one failure costs only itself. The
first four share the GPU at once (tiny models: the card is idle most of each step), the bench,
the whole-model comparison and then the rehearsal run alone afterwards so that their timings and
peaks are not disturbed; the rehearsal starts no recipe after REHEARSAL_DEADLINE seconds of the
whole, so the whole stays under 9 minutes on one H100 / H200, less with a prepared benchmark cache (MOE_UNLEARN_CACHE):
  env       GPU, versions
  cuda      tests/cuda (capture/replay on CUDA; short bf16/fp16 runs of GA+GRIP, GradDiff+TRACE, NPO+SEUF)
  demo      `moe-unlearn demo --quick` in bf16 on CUDA, one row per run
  fsdp2     GA+GRIP and NPO+SEUF under accelerate's FSDP2 with world size 1 (configs/accelerate/
            fsdp2.yaml), each saved model then evaluated by `moe-unlearn eval` in one plain process
  zero3     the same under DeepSpeed ZeRO-3 (configs/accelerate/deepspeed_zero3.yaml; n/a without deepspeed)
  bench     the bench's real-geometry figures on CUDA (OLMoE-1B-7B and Qwen3-30B-A3B layers), one row each
  full_depth bench.full_depth_gpu: a whole OLMoE-1B-7B (random weights, bf16), the engine against the
            plain loop for GA, GradDiff and NPO at forget 8 x 256 (+ retain 8 x 256): step time,
            peak, tokens/s and model TFLOP/s, one row each
  rehearsal bench/rehearsal.py --scale full: each shipped recipe's model at full depth (random
            weights, fixture data, the recipe's own training settings), most important first:
            step time, peak and the memory estimate, one row each; skipped where the estimate
            exceeds the GPU's memory (on an H100: MUSE's Qwen3-30B, TOFU's all-parameter OLMoE,
            RMU's Mixtral), not run past the deadline
Each check's whole output goes to $OUT/<check>.log (OUT set) or the work folder, the table to
$OUT/gpu_check.md, the bench's JSON to $OUT/bench.json, the rehearsal's to $OUT/rehearsal.json.
Two processes on one GPU cannot run NCCL, so multi-process runs are not checked here (CI checks
them with 2 CPU processes over gloo).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CLI = [PY, "-m", "moe_unlearn.cli.main"]
CHECKS = ("cuda", "demo", "fsdp2", "zero3", "bench", "full_depth", "rehearsal")
ENGINES = {"fsdp2": "configs/accelerate/fsdp2.yaml", "zero3": "configs/accelerate/deepspeed_zero3.yaml"}
LAUNCHED_CASES = (("ga", "grip"), ("npo", "seuf"))
THREADS = "4"  # per check: four checks share the machine's cores
REHEARSAL_DEADLINE = 390  # seconds into the whole after which the rehearsal starts no further recipe
REHEARSAL_LAST = 150  # seconds a recipe started before the deadline may take (MUSE's 30B model: about 90)


@dataclass
class Check:
    name: str
    cmd: list[str]
    limit: int
    code: int | None = None
    seconds: float = 0.0
    proc: subprocess.Popen | None = None
    t0: float = 0.0

    def start(self, logs: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": THREADS, "MOE_UNLEARN_TEST_THREADS": THREADS}
        self.log = logs / f"{self.name}.log"
        self.t0 = time.perf_counter()
        with self.log.open("w") as f:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def poll(self) -> bool:
        """True once finished (killed at its time limit)."""
        if self.code is not None:
            return True
        code = self.proc.poll()
        if code is None and time.perf_counter() - self.t0 > self.limit:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
            code = 124
        if code is not None:
            self.code, self.seconds = code, time.perf_counter() - self.t0
            print(f"[gpu_check] {self.name}: exit {code} ({self.seconds:.0f} s)", flush=True)
        return code is not None

    def tail(self) -> str:
        if self.code == 124:
            return f"timed out after {self.limit} s"
        lines = [x for x in self.log.read_text(errors="replace").splitlines() if x.strip()]
        return (lines[-1] if lines else "").replace("|", "/")[:200]


def env_row() -> tuple[str, str, str]:
    import accelerate
    import torch
    import transformers

    try:
        import peft
        peft_v = peft.__version__
    except ImportError as e:
        peft_v = f"missing ({e})"
    if not torch.cuda.is_available():
        return "env", "FAIL", "no CUDA device"
    return "env", "ok", (f"{torch.cuda.get_device_name(0)}; torch {torch.__version__} (CUDA {torch.version.cuda}), "
                         f"transformers {transformers.__version__}, accelerate {accelerate.__version__}, peft {peft_v}")


def cuda_tests() -> Check:
    return Check("cuda", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "tests/cuda"], 200)


def demo(work: Path) -> Check:
    return Check("demo", [*CLI, "demo", "--quick", "--out", str(work / "demo"), "common.model.device=cuda",
                          "common.train.precision=bf16"], 300)


def demo_rows(check: Check, work: Path) -> list[tuple[str, str, str]]:
    path = work / "demo" / "results.json"
    if check.code != 0 or not path.is_file():
        return []
    rows = []
    for r in json.loads(path.read_text()):
        if "forget" not in r:
            rows.append((f"demo {r.get('run')}", "skipped", str(r.get("reason", ""))[:120]))
            continue
        stab = r["routing"]["stability"]
        rows.append((f"demo {r['run']}", "ok", f"steps {r['steps']}, forget MC {r['forget']['mc_acc']:.3f}, "
                     f"retain MC {r['retain']['mc_acc']:.3f}, stability retain {stab['retain']:.3f} "
                     f"holdout {stab['holdout']:.3f}"))
    return rows


def launched(work: Path, engine: str) -> Check:
    """GA+GRIP and NPO+SEUF under `accelerate launch` with the engine's config and world size 1
    (bf16), each saved model then read back by a plain `eval`."""
    from moe_unlearn.benchmark import cached_benchmark

    steps = []
    for method, adapter in LAUNCHED_CASES:
        tag = f"{engine}-{method}-{adapter}"
        cfg = work / f"{tag}.yaml"
        cfg.write_text(json.dumps({
            "method": method, "adapters": [adapter], "model": {"device": "cuda"},
            "data": {"manifest": str(cached_benchmark("tiny", seed=0)), "batch_size": 8, "retain_batch_size": 8},
            "train": {"lr": 1e-3, "max_steps": 4, "checkpoint_every": 2, "precision": "bf16"},
            "eval": {"metrics": ["nll", "mc_acc", "stability"], "max_examples": 32},
        }))
        launch = [PY, "-m", "accelerate.commands.launch", "--config_file", ENGINES[engine], "--num_processes", "1",
                  "-m", "moe_unlearn.cli.main", "unlearn", str(cfg), "--out", str(work / tag), "--quiet"]
        evaluate = [*CLI, "eval", str(cfg), "--model", str(work / tag / "model"), "--out",
                    str(work / f"{tag}-eval.json"), "--device", "cuda", "--quiet"]
        steps.append(f"({shlex.join(launch)} && {shlex.join(evaluate)}) || rc=1")
    return Check(engine, ["bash", "-c", "; ".join(["rc=0", *steps, "exit $rc"])], 300)


def launched_rows(check: Check, work: Path) -> list[tuple[str, str, str]]:
    rows = []
    for method, adapter in LAUNCHED_CASES:
        run_dir = work / f"{check.name}-{method}-{adapter}"
        metrics, again = run_dir / "metrics.json", work / f"{run_dir.name}-eval.json"
        if not metrics.is_file() or not again.is_file():
            rows.append((f"{check.name} {method}+{adapter}", "FAIL", f"no result (see {check.name}.log)"))
            continue
        m, e = json.loads(metrics.read_text()), json.loads(again.read_text())
        log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
        rows.append((f"{check.name} {method}+{adapter}", "ok",
                     f"steps {[r['step'] for r in log]}, forget NLL {m['forget']['nll']:.4f} (plain eval of the "
                     f"saved model: {e['forget']['nll']:.4f}), stability retain {m['routing']['stability']['retain']:.3f}"))
    return rows


def bench(work: Path) -> Check:
    return Check("bench", [PY, "-m", "bench.run", "--only", "real_geometry", "--out", str(work / "bench.json")], 180)


def full_depth(work: Path) -> Check:
    return Check("full_depth", [PY, "-m", "bench.run", "--only", "full_depth_gpu", "--out",
                                str(work / "full_depth.json")], 180)


def bench_rows(check: Check, work: Path) -> list[tuple[str, str, str]]:
    path = work / f"{check.name}.json"
    if check.code != 0 or not path.is_file():
        return []
    rows = []
    for f in json.loads(path.read_text())["figures"]:
        unit = f" {f['unit']}" if f.get("unit") else ""
        target = "report" if f["target"] is None else f"{f['op']} {f['target']}: {'pass' if f['passed'] else 'FAIL'}"
        rows.append((f"bench: {f['figure']}", f"{f['measured']}{unit}", target))
    return rows


def rehearsal(work: Path, elapsed: float) -> Check:
    """The recipes at full depth with what is left before the deadline as their budget."""
    budget = max(0, round(REHEARSAL_DEADLINE - elapsed))
    (work / "rehearsal.json").unlink(missing_ok=True)  # an earlier run's rows are not this run's
    return Check("rehearsal", [PY, "-m", "bench.rehearsal", "--scale", "full", "--steps", "2", "--budget", str(budget),
                               "--out", str(work / "rehearsal.json")], budget + REHEARSAL_LAST)


def rehearsal_rows(check: Check, work: Path) -> list[tuple[str, str, str]]:
    """One row per recipe the rehearsal reached (also when it was stopped at its limit)."""
    path = work / "rehearsal.json"
    if not path.is_file():
        return []
    rows = []
    for r in json.loads(path.read_text()):
        if r["status"] != "ok":
            rows.append((f"rehearsal: {r['recipe']}", r["status"].split(":")[0], r["status"].replace("|", "/")[:200]))
            continue
        rows.append((f"rehearsal: {r['recipe']}", "ok", f"{r['model']}: step {r['step_s']:.3g} s, peak "
                     f"{r['peak_GiB']:.1f} GiB, estimate {r['estimate_GiB']:.1f} GiB "
                     f"({r['estimate_over_peak']:.2f} x)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bash scripts/gpu_check.sh", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=CHECKS, help="run only these checks (a rerun after a fix)")
    only = set(p.parse_args(argv).only or CHECKS)
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/moe-unlearn-gpu-check"))
    work.mkdir(parents=True, exist_ok=True)
    logs = Path(os.environ["OUT"]) if os.environ.get("OUT") else work
    rows: list[tuple[str, str, str, float]] = []
    t0 = time.perf_counter()
    name, status, detail = env_row()
    rows.append((name, status, detail, time.perf_counter() - t0))
    if status == "ok":
        if "zero3" in only and importlib.util.find_spec("deepspeed") is None:
            only.discard("zero3")
            rows.append(("zero3", "n/a", "deepspeed is not installed (scripts/gpu_wheels.sh carries it)", 0.0))
        together = [c for c in (cuda_tests(), demo(work), launched(work, "fsdp2"), launched(work, "zero3"))
                    if c.name in only]
        groups = [lambda: together, lambda: [bench(work)] if "bench" in only else [],
                  lambda: [full_depth(work)] if "full_depth" in only else [],
                  lambda: [rehearsal(work, time.perf_counter() - t0)] if "rehearsal" in only else []]
        ran: list[Check] = []
        for make in groups:  # each group made when it starts: the rehearsal's budget is what is left
            group = make()
            for c in group:
                c.start(logs)
            while not all([c.poll() for c in group]):
                time.sleep(0.5)
            ran += group
        extra = {"cuda": lambda c, w: [], "demo": demo_rows, "fsdp2": launched_rows, "zero3": launched_rows,
                 "bench": bench_rows, "full_depth": bench_rows, "rehearsal": rehearsal_rows}
        for c in ran:
            rows.append((c.name, "ok" if c.code == 0 else f"FAIL ({c.code})", c.tail(), c.seconds))
            rows += [(*r, 0.0) for r in extra[c.name](c, work)]
    table = "| check | result | detail | seconds |\n|---|---|---|---|\n" + "\n".join(
        f"| {n} | {s} | {d} | {t:.0f} |" for n, s, d, t in rows)
    print(table)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "gpu_check.md").write_text(table + "\n")
        for name in ("bench.json", "full_depth.json", "rehearsal.json"):  # the figures' and recipes' details
            if (work / name).is_file():
                shutil.copy(work / name, Path(os.environ["OUT"]) / name)
    return 0 if all(not s.startswith("FAIL") for _, s, _, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
