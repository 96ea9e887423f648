"""Reliability, second round: every failure class is one line, leftovers are cleaned, overlaps warned.

- a full disk (ENOSPC) or a file too large (EFBIG) is one line in any writer's words: torch's
  C++ writer (a RuntimeError without errno), safetensors' Rust writer (SafetensorError), OSError;
  the checkpoint or model being written is never left half-written, the previous one is kept;
- `report` writes its files for run folders whose names are not UTF-8 and for metrics whose
  strings hold lone surrogates (or a '$' matplotlib would parse as TeX);
- the temporary siblings a killed writer left are removed by the next writer of that path, never
  those of a live process;
- forget records that are also retain records give one warning line with the count; the run goes on.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from moe_unlearn.cli.main import run
from moe_unlearn.errors import os_failure
from moe_unlearn.leftovers import clear_leftovers
from moe_unlearn.train import checkpoint
from reliability_helpers import write_yaml


def _dead_pid() -> int:
    """The pid of a process that has exited (the kernel hands it out again only much later)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


# ---- a full disk in every writer's words ----------------------------------------------------------
# what torch.save raises when its writer cannot write (seen on /dev/full and past RLIMIT_FSIZE): no errno
TORCH_FULL_ERROR = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
TORCH_FULL = "No space left on device or file too large"  # the one line's reason: torch does not say which

WRITE_BEYOND_THE_LIMIT = """
import resource, signal, sys, torch
from safetensors.torch import save_file
from moe_unlearn.errors import os_failure
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond RLIMIT_FSIZE then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
for name, write in [("torch", torch.save), ("safetensors", save_file)]:
    try:
        write({"x": torch.zeros(100_000)}, f"{sys.argv[1]}/{name}")
    except Exception as e:
        print(name, type(e).__name__, os_failure(e), sep="|")
"""


def test_os_failure_reads_what_the_writers_really_raise(tmp_path):
    """The genuine exceptions of torch.save and safetensors' save_file writing past a file size
    limit (EFBIG); an exception that is no failed write stays a bug (None: its traceback is kept)."""
    got = subprocess.run([sys.executable, "-c", WRITE_BEYOND_THE_LIMIT, str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    want = [f"torch|RuntimeError|{TORCH_FULL}", "safetensors|SafetensorError|File too large"]
    assert got.stdout.splitlines() == want, got.stdout + got.stderr[-2000:]
    assert os_failure(RuntimeError(TORCH_FULL_ERROR)) == TORCH_FULL
    assert os_failure(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")) == TORCH_FULL
    assert os_failure(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == "No space left on device"
    assert os_failure(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")) \
        == "No space left on device"
    assert os_failure(RuntimeError("The size of tensor a (3) must match the size of tensor b (4)")) is None
    assert os_failure(SafetensorError("Error while deserializing header: HeaderTooLarge")) is None


def _raising(error: Exception):
    """A writer that leaves half a file, then fails with error."""
    def write(tensors_or_obj, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 100)
        raise error
    return write


CHECKPOINT_FAILURES = {
    "torch-save-runtime-error": ("torch", RuntimeError(TORCH_FULL_ERROR), TORCH_FULL),
    "torch-save-enospc": ("torch", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    "safetensors-efbig": ("save_file", SafetensorError("Error while serializing: I/O error: File too large "
                                                       "(os error 27)"), "File too large"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_FAILURES))
def test_disk_full_while_writing_a_checkpoint_is_one_line_and_keeps_the_previous(case, world, tmp_path, cli,
                                                                                  monkeypatch):
    """The second checkpoint's write fails: exit 1, one line naming the reason and the checkpoint
    kept; no half-written folder (.tmp-step-*) next to it, and the kept one still loads."""
    where, error, reason = CHECKPOINT_FAILURES[case]
    target, name = (checkpoint.torch, "save") if where == "torch" else (checkpoint, "save_file")
    real, calls = getattr(target, name), []

    def second_fails(obj, f, *args, **kwargs):
        calls.append(f)
        return (_raising(error) if len(calls) == 2 else real)(obj, f, *args, **kwargs)

    monkeypatch.setattr(target, name, second_fails)
    out = tmp_path / "run"
    cli(["unlearn", world.good, "--out", out, "--quiet"], code=1, writes=[out],
        phrase=rf"could not write checkpoint step-000002 \({reason}\); checkpoint step-000001 is kept: "
               r"free space and rerun with --resume$")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]
    monkeypatch.undo()
    tensors, state = checkpoint.load(out / "checkpoints" / "step-000001", torch.device("cpu"))
    assert tensors and state["step"] == 1


@pytest.mark.parametrize("reason,code", [("No space left on device", 28), ("File too large", 27)])
def test_safetensor_error_while_saving_the_model_is_one_line(reason, code, world, tmp_path, cli, monkeypatch):
    """save_pretrained's safetensors writer fails (its own exception type, no OSError): exit 1, one
    line, no model/ and no half-written .model.tmp-* beside it, the last checkpoint kept."""
    import transformers.modeling_utils as mu

    error = SafetensorError(f"Error while serializing: I/O error: {reason} (os error {code})")
    monkeypatch.setattr(mu, "safe_save_file", _raising(error))
    out = tmp_path / "run"
    cli(["unlearn", world.good, "--out", out, "--quiet"], code=1, writes=[out],
        phrase=rf"could not save the model to .*model \({reason}\); nothing half-written was left; "
               r"checkpoint step-000002 is kept: free space and rerun with --resume$")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml", "log.jsonl"]


# ---- report: names and values that are not valid UTF-8 --------------------------------------------
def _metrics(method: str | None) -> dict:
    m = {"adapters": ["grip"], "forget": {"nll": 4.5, "mc_acc": 0.3, "token_acc": 0.2},
         "retain": {"nll": 0.1, "mc_acc": 0.9}, "routing": {"stability": {"retain": 0.9},
                                                          "per_layer": {"retain": [0.9, 0.8]}},
         "replay": {"value": 0.3, "without": {"token_acc": 0.2}, "with_replay": {"token_acc": 0.5}}}
    return m if method is None else {"method": method, **m}


def _run_dir(folder: Path, method: str | None) -> Path:
    """A finished run: metrics.json (ASCII JSON: '\\ud800' stays an escape), and a log with three
    periodic evals, so every figure draws the run's name (scatter, legends, tick labels, titles)."""
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(_metrics(method)))
    rows = [{"step": s, "loss": 1.0 - s / 10, "eval": {"forget": {"nll": 3.0, "mc_acc": 0.9 - s / 10},
                                                       "retain": {"mc_acc": 0.9}}} for s in range(3)]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize("name,method,shown", [
    (os.fsdecode(b"run-\xff"), None, r"run-\xff"),  # a folder name that is not UTF-8 names the run
    ("surrogate", "\ud800", r"\ud800+grip"),  # a lone surrogate from a JSON escape
    ("tex", "a$\\undefined$b", "a$\\undefined$b+grip"),  # matplotlib would parse it as TeX
])
def test_report_writes_its_files_whatever_the_names(name, method, shown, tmp_path, cli):
    """Exit 0 and every file written; the name is shown with escapes, never dropped."""
    run_dir = _run_dir(tmp_path / name, method)
    out = tmp_path / "report"
    cli(["report", run_dir, "--out", out], code=0, writes=[out])
    assert f"| {shown} |" in (out / "report.md").read_text(encoding="utf-8")
    assert f"<td>{shown}</td>" in (out / "report.html").read_text(encoding="utf-8")
    figures = {"forget_vs_utility", "stability_per_layer", "replay_recovery", "training_curves", "tradeoff_00"}
    assert figures <= {p.stem for p in out.glob("*.png")}


# ---- leftovers of killed writers ------------------------------------------------------------------
def test_report_removes_the_staging_folders_of_dead_processes_only(tmp_path, cli):
    """A report killed with SIGKILL leaves `.<out>.tmp-<pid>-<hex>` beside --out: the next report
    into the same --out removes it; a live process's (this one's) and other names stay."""
    run_dir = _run_dir(tmp_path / "run", "ga")
    out, dead = tmp_path / "report", _dead_pid()
    left = [tmp_path / f".report.tmp-{dead}-0123456789ab", tmp_path / f".report.old-{dead}-0123456789ab"]
    kept = [tmp_path / f".report.tmp-{os.getpid()}-0123456789ab", tmp_path / f".other.tmp-{dead}-0123456789ab"]
    for folder in [*left, *kept]:
        folder.mkdir()
        (folder / "report.md").write_text("half")
    cli(["report", run_dir, "--out", out], code=0, writes=[out, *left])
    assert not any(p.exists() for p in left) and all((p / "report.md").is_file() for p in kept)
    assert (out / "report.html").is_file()


def test_leftovers_under_a_lock_go_by_pid_or_by_age(tmp_path):
    """clear_leftovers: a dead pid's file goes; a live pid's stays, unless the caller holds the
    directory's lock and the file is older than that lock (its pid then belongs to someone else)."""
    target, dead, other = tmp_path / "model", _dead_pid(), os.getppid()
    old_live = tmp_path / f".model.tmp-{other}-aaaaaaaaaaaa"
    old_live.mkdir()
    past = time.time() - 60
    os.utime(old_live, (past, past))
    dead_file = tmp_path / f".model.tmp-{dead}-bbbbbbbbbbbb.json"
    dead_file.write_text("{")
    new_live = tmp_path / f".model.tmp-{other}-cccccccccccc"
    new_live.mkdir()
    mine = tmp_path / f".model.old-{os.getpid()}-dddddddddddd"
    mine.mkdir()
    clear_leftovers(target)
    assert not dead_file.exists() and old_live.exists() and new_live.exists() and mine.exists()
    clear_leftovers(target, locked_at=time.time() - 30)
    assert not old_live.exists() and new_live.exists() and mine.exists()


# ---- forget / retain overlap ----------------------------------------------------------------------
QA = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a baker."} for i in range(8)]
RETAIN = {
    "identical": (QA, "8 of the 8"),
    "shared-with-own-ids": ([{**r, "id": f"retain-{i}"} for i, r in enumerate(QA[:3])]
                            + [{"question": "Who is Ann?", "answer": "Ann is a pilot."}], "3 of the 8"),
    "disjoint": ([{"question": "Who is Ann?", "answer": "Ann is a pilot."}], None),
}


@pytest.mark.parametrize("case", list(RETAIN))
def test_forget_records_in_the_retain_set_warn_once_and_the_run_finishes(case, world, tmp_path, capsys):
    """Records are compared by what training reads (question and answer), so a retain copy with an
    id of its own still counts; one warning line with the count, and the run trains and saves."""
    retain, count = RETAIN[case]
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA))
    (tmp_path / "retain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in retain))
    config = write_yaml(tmp_path / "overlap.yaml", {
        "method": "graddiff", "model": {"path": str(world.moe)},
        "data": {"forget": {"path": str(tmp_path / "forget.jsonl"), "kind": "qa"},
                 "retain": {"path": str(tmp_path / "retain.jsonl"), "kind": "qa"},
                 "batch_size": 4, "retain_batch_size": 4},
        "train": {"max_steps": 2, "checkpoint_every": 0}, "eval": {"metrics": ["nll"], "max_examples": 4}})
    capsys.readouterr()
    assert run(["unlearn", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "model").is_dir()
    if count is None:
        assert err == ""
    else:
        assert err.count("\n") == 1 and err.startswith(
            f"moe-unlearn: warning: {count} forget records are also in the retain set"), err
