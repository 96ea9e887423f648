"""Exceptions the CLI turns into one-line messages, and the one-line warning.

UserError: the user's input is wrong (exit code 2). RunFailure: the run itself failed
(divergence, out of memory, interrupted; exit code 1). `os_failure` says whether any other
exception is the machine refusing a file operation (disk full, file too large, permission
denied), whichever library raised it. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import sys

# torch's C++ zip writer reports a failed write (ENOSPC, EFBIG) as a RuntimeError without an errno
_TORCH_WRITER = ("unexpected pos", "PytorchStreamWriter failed")
# safetensors' Rust writer: 'I/O error: No space left on device (os error 28)', older: 'Os { code: 28, ...'
_RUST_OS_ERROR = re.compile(r"os error (\d+)|Os \{ code: (\d+)")


class UserError(Exception):
    """A mistake in the user's input; the message says what is wrong and how to fix it."""

    exit_code = 2


class RunFailure(Exception):
    """A run that could not finish (e.g. NaN loss); the message says what was kept."""

    exit_code = 1


def os_failure(e: BaseException) -> str | None:
    """The system's reason a file operation failed ('No space left on device', 'File too large'),
    or None when e is no such failure (a bug). Writers that are not Python report a full disk in
    their own exception types, so every writer's errors are read here, in one place."""
    text = " ".join(str(e).split())
    if isinstance(e, OSError):
        return e.strerror or text or type(e).__name__
    code = _RUST_OS_ERROR.search(text)
    if type(e).__name__ == "SafetensorError" and code:
        return os.strerror(int(code.group(1) or code.group(2)))
    if isinstance(e, RuntimeError) and any(sign in text for sign in _TORCH_WRITER):
        return f"{os.strerror(errno.ENOSPC)} or {os.strerror(errno.EFBIG).lower()}"
    return None


def first_line(e: BaseException, default: str = "") -> str:
    """The first line of an exception's message (libraries' messages run to many lines; ours is one),
    or `default` when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else default


def warn(message: str) -> None:
    """One 'moe-unlearn: warning: ...' line on stderr: worth knowing, but the command goes on."""
    print(f"moe-unlearn: warning: {' '.join(message.split())}", file=sys.stderr)
