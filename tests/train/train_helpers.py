"""Helpers shared by the engine tests (a module of its own: `conftest` is a name many folders use)."""

from __future__ import annotations

from pathlib import Path


def kill_after_first_checkpoint(command: str, config: Path, out: Path) -> None:
    """`moe-unlearn COMMAND CONFIG --out OUT` in a subprocess, killed with SIGKILL as soon as its
    first checkpoint is in place (this process's torch threads: MOE_UNLEARN_TEST_THREADS, 1 by default)."""
    import signal
    import subprocess
    import sys
    import time

    from thread_env import same_threads_env

    proc = subprocess.Popen([sys.executable, "-m", "moe_unlearn.cli.main", command, str(config), "--quiet",
                             "--out", str(out)], env=same_threads_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list((out / "checkpoints").glob("step-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (out / "metrics.json").exists()
