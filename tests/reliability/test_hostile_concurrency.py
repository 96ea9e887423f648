"""Two writers, one directory: `unlearn` (and `demo`) take an exclusive lock on their output
directory (OUT/.moe-unlearn.lock, flock'ed, holding the pid); a second writer is refused in one
line naming that pid, and a lock left by a dead process (kill -9) is taken over."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from moe_unlearn.paths import LOCK_NAME
from reliability_helpers import SCRIPT
from thread_env import same_threads_env

HOLD = ("import sys, time; from pathlib import Path; from moe_unlearn.paths import DirLock; "
        "lock = DirLock.acquire(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)")


@pytest.fixture
def holder():
    """holder(dir) -> a process that holds dir's lock until the test ends (then killed with -9)."""
    procs = []

    def start(directory):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_then_a_dead_holders_lock_is_taken_over(world, hostile, copy_run, holder, cli):
    run = copy_run(hostile.finished)
    proc = holder(run)
    for flag in ("--resume", "--overwrite"):
        cli(["unlearn", world.good, "--out", run, flag, "--quiet"],
            phrase=rf"output dir .*run is in use by another moe-unlearn process \(pid {proc.pid}\); wait for it")
    proc.send_signal(signal.SIGKILL)  # dies holding it: the file stays, the kernel drops the flock
    proc.wait()
    assert (run / LOCK_NAME).read_text().strip() == str(proc.pid)
    cli(["unlearn", world.good, "--out", run, "--resume", "--quiet"], code=0, writes=[run])
    assert not (run / LOCK_NAME).exists()


def test_a_stale_lock_file_naming_a_dead_pid_is_recovered(world, tmp_path, cli):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(f"{dead.pid}\n")
    cli(["unlearn", world.good, "--out", run, "--quiet"], code=0, writes=[run])
    assert (run / "metrics.json").is_file() and not (run / LOCK_NAME).exists()


def test_a_lock_file_that_is_a_symlink_is_refused(world, tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(world.root / "qa.jsonl")
    cli(["unlearn", world.good, "--out", run, "--overwrite", "--quiet"],
        phrase=r"\.moe-unlearn\.lock is a symlink; remove it \(moe-unlearn never writes through one\)")


def test_two_real_runs_on_one_out_dir(world, tmp_path, cli):
    """A runs (a subprocess), held still with SIGSTOP once it owns the lock; B (this process) is
    refused naming A's pid; A then finishes alone: every step logged once, a complete model/."""
    out = tmp_path / "run"
    proc = subprocess.Popen([str(SCRIPT), "unlearn", str(world.good), "train.max_steps=4", "--out", str(out), "--quiet"],
                            env=same_threads_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not ((out / LOCK_NAME).is_file() and (out / LOCK_NAME).read_text().strip() == str(proc.pid)):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)
    try:
        for flag in ([], ["--resume"], ["--overwrite"]):
            cli(["unlearn", world.good, "train.max_steps=4", "--out", out, *flag, "--quiet"], writes=[out],
                phrase=rf"is in use by another moe-unlearn process \(pid {proc.pid}\)")
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4 and (out / "model" / "config.json").is_file()


def test_a_second_demo_on_one_out_dir_is_refused(world, tmp_path, holder, cli):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "results.json").write_text("[]")  # a demo dir, so only the lock refuses it
    proc = holder(out)
    cli(["demo", "--out", out, "preset=tiny"], phrase=rf"demo dir .*demo is in use by another moe-unlearn process "
                                                      rf"\(pid {proc.pid}\)")


def test_a_lock_released_at_interpreter_exit_needs_no_module_globals(tmp_path, monkeypatch):
    """A lock whose holder is collected at interpreter exit is released from __del__ after the
    module's globals may be gone (seen as 'Exception ignored in DirLock.__del__'): release()
    must still remove the lock file."""
    import moe_unlearn.paths as paths

    lock = paths.DirLock.acquire(tmp_path)
    assert (tmp_path / LOCK_NAME).exists()
    monkeypatch.setattr(paths, "LOCK_NAME", None)  # what module teardown does to a global
    lock.release()
    assert not any(p.name.startswith(".moe-unlearn") for p in tmp_path.iterdir())
