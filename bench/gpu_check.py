"""One prepared check for a GPU machine: prints one table (check | result | seconds).

    bash scripts/gpu_check.sh        (the machine's own python3 with torch/CUDA, transformers,
                                      accelerate and peft; PYTHONPATH=src; missing packages as
                                      wheels in .whl/, see scripts/gpu_wheels.sh)

Checks, in order, each in its own process with its own time limit so one failure costs only
itself (the whole script stays under 8 minutes on one H100 / H200):
  env       GPU, versions
  cuda      tests/cuda (capture/replay on CUDA; short bf16/fp16 runs of GA+GRIP, GradDiff+TRACE, NPO+SEUF)
  demo      `moe-unlearn demo --quick` in bf16 on CUDA (builds the embedded benchmark on the GPU)
  fsdp2     GA+GRIP under accelerate's FSDP2 with world size 1 (configs/accelerate/fsdp2.yaml)
  ddp2      GA+GRIP with 2 processes on the one GPU is not possible with NCCL; skipped by design
  bench     the bench's real-geometry figures on CUDA, where the bench has them
The table also goes to $OUT/gpu_check.md when OUT is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CLI = [PY, "-m", "moe_unlearn.cli.main"]


def run(cmd: list[str], limit: int, cwd: Path = REPO) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=limit)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out = 124, f"timed out after {limit} s; " + str(e.stdout or "")[-500:]
    return code, out, time.perf_counter() - t0


def last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return (lines[-1] if lines else "").replace("|", "/")[:160]


def check_env() -> tuple[str, str]:
    import accelerate
    import torch
    import transformers

    if not torch.cuda.is_available():
        return "FAIL", "no CUDA device"
    return "ok", (f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}, transformers "
                  f"{transformers.__version__}, accelerate {accelerate.__version__}")


def check_cuda_tests() -> tuple[str, str, float]:
    code, out, sec = run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cuda"], 240)
    return ("ok" if code == 0 else "FAIL"), last_line(out), sec


def check_demo(work: Path) -> tuple[str, str, float]:
    out = work / "demo"
    code, text, sec = run([*CLI, "demo", "--quick", "--out", str(out), "common.model.device=cuda",
                           "common.train.precision=bf16"], 330)
    if code != 0:
        return "FAIL", last_line(text), sec
    results = json.loads((out / "results.json").read_text())
    cells = ", ".join(f"{r['run']} fMC {r['forget']['mc_acc']:.2f} rMC {r['retain']['mc_acc']:.2f} "
                      f"stabR {r['routing']['stability']['retain']:.2f}" for r in results)
    return "ok", f"{len(results)} runs: {cells}", sec


def check_fsdp2(work: Path) -> tuple[str, str, float]:
    from moe_unlearn.benchmark import cached_benchmark

    manifest = cached_benchmark("tiny", seed=0)
    cfg = work / "fsdp2.yaml"
    cfg.write_text(json.dumps({
        "method": "ga", "adapters": ["grip"], "grip": {"mode": "project"},
        "data": {"manifest": str(manifest), "batch_size": 8, "retain_batch_size": 8},
        "train": {"lr": 1e-3, "max_steps": 4, "checkpoint_every": 2, "precision": "bf16"},
        "eval": {"metrics": ["nll", "mc_acc", "stability"], "max_examples": 32},
    }))
    cmd = [PY, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/fsdp2.yaml",
           "--num_processes", "1", "-m", "moe_unlearn.cli.main", "unlearn", str(cfg), "--out", str(work / "fsdp2"),
           "--quiet"]
    code, text, sec = run(cmd, 240)
    return ("ok" if code == 0 else "FAIL"), last_line(text), sec


def check_bench(work: Path) -> tuple[str, str, float]:
    sys.path.insert(0, str(REPO))
    from bench.run import GROUPS

    wanted = [g for g in GROUPS if "geometry" in g or "real" in g]
    if not wanted:
        return "n/a", "the bench has no real-geometry figures", 0.0
    code, text, sec = run([PY, "-m", "bench.run", "--only", *wanted, "--out", str(work / "bench.json")], 240)
    return ("ok" if code == 0 else "FAIL"), last_line(text), sec


def main() -> int:
    work = Path(os.environ.get("OUT") or "/tmp") / "moe-unlearn-gpu-check"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    status, detail = check_env()
    rows.append(("env", status, detail, time.perf_counter() - t0))
    if status == "ok":
        for name, fn in (("cuda tests", check_cuda_tests), ("quick demo bf16", lambda: check_demo(work)),
                         ("GA+GRIP FSDP2 world 1", lambda: check_fsdp2(work)),
                         ("real-geometry bench", lambda: check_bench(work))):
            status, detail, sec = fn()
            rows.append((name, status, detail, sec))
            print(f"[gpu_check] {name}: {status} ({sec:.0f} s)", flush=True)
    table = "| check | result | detail | seconds |\n|---|---|---|---|\n" + "\n".join(
        f"| {n} | {s} | {d} | {t:.0f} |" for n, s, d, t in rows)
    print(table)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "gpu_check.md").write_text(table + "\n")
    return 0 if all(s in ("ok", "n/a") for _, s, _, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
