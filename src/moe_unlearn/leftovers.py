"""Temporary siblings a killed writer left behind, removed by the next writer of the same path.

`paths.temp_sibling` names them `.<name>.tmp-<pid>-<hex>[<suffix>]`, and `.<name>.old-<pid>-<hex>`
for an old directory moved aside. A process killed with SIGKILL cannot remove its own, so each
writer clears those of its destination before it writes: the ones whose pid is no longer alive,
and, when it holds the lock of their directory, the ones last changed before it took that lock
(their pid may since belong to another process). A live writer's temporary is never touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from moe_unlearn.paths import remove


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.(?:tmp|old)-(\d{{1,18}})-[0-9a-f]+(?:\..*)?", re.DOTALL)


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 only asks)."""
    if os.name == "nt":  # os.kill there ends the process: never ask, keep everything
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OverflowError:  # no pid is that large
        return False
    return True


def _stale(entry: Path, pid: int, locked_at: float | None) -> bool:
    """Left by a dead process, or (locked_at given) changed last before the caller took the lock."""
    if pid == os.getpid():
        return False
    if not _alive(pid):
        return True
    try:
        return locked_at is not None and entry.lstat().st_mtime < locked_at
    except FileNotFoundError:  # its writer finished meanwhile
        return False


def clear_leftovers(path: Path, *, locked_at: float | None = None) -> None:
    """Remove the temporary siblings of path that no live writer owns.

    locked_at: when the caller took the lock of path's directory (a file's st_mtime, the clock
    the siblings' times are on); siblings last changed before it are stale whatever their pid.
    """
    pattern = _pattern(path.name)
    try:
        entries = list(path.parent.iterdir())
    except OSError:  # no parent yet: nothing left there
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and _stale(entry, int(match.group(1)), locked_at):
            remove(entry)
