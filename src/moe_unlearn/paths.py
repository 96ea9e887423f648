"""Where commands may write, and how: one destination check, atomic writes and a directory lock
for every writer.

`check_destination` refuses an output path that is, contains or lies inside any input (model
directory, data file, config, benchmark directory), comparing resolved paths so symlinks count,
and an output below a regular file. `atomic_write` / `atomic_path` / `atomic_dir` / `publish`
write into a hidden sibling and rename it into place: a reader (or a later run) sees the old
file, the new one, or none, never half of one; a hard link to an input is replaced, never
written through. `DirLock` keeps a second process from writing the same output directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Literal

from moe_unlearn.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per directory is then up to the user
    fcntl = None  # type: ignore[assignment]

Inputs = Iterable[tuple[str, "str | Path | None"]]  # (what it is, e.g. "model dir"; its path)
LOCK_NAME = ".moe-unlearn.lock"


MAX_SIDE_FILE = 64 * 2**20  # a JSON side file (metrics.json, --retrained) larger than this is not one of ours


def user_path(raw: str | Path) -> Path:
    """A path the user gave, as typed: '~' and $VARS are the shell's to expand, never ours, so the
    destination check, the writer and every reader mean the same file (a quoted '~/x' is a folder
    named '~' here, as in cp or mkdir)."""
    return Path(raw)


def is_inside(path: Path, directory: Path) -> bool:
    """True when path is directory itself or lies below it (after resolving links and '..')."""
    path, directory = user_path(path).resolve(), user_path(directory).resolve()
    return path == directory or directory in path.parents


def _special_kind(path: Path) -> str | None:
    """'a FIFO', 'a device', 'a socket' for such an existing path (links followed), else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def regular_file(raw: str | Path, what: str, *, max_bytes: int | None = None) -> Path:
    """raw after checking that it names an existing regular file (links followed), at most max_bytes
    long: reading a FIFO, device or socket would block or never end, so none is ever opened."""
    path = user_path(raw)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} {raw} does not exist") from None
    except OSError as e:
        raise UserError(f"{what} {raw} cannot be read ({e.strerror or type(e).__name__})") from None
    special = _special_kind(path)
    if special is not None or not stat.S_ISREG(info.st_mode):
        raise UserError(f"{what} {raw} is {special or 'a directory'}, not a regular file; give a file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise UserError(f"{what} {raw} is {info.st_size} bytes, more than the {max_bytes} such a file can be; "
                        "give the right file")
    return path


def check_destination(dest: str | Path, inputs: Inputs, *, what: str = "--out",
                      kind: Literal["file", "dir", "any"] = "file") -> Path:
    """The resolved destination, after refusing one that overlaps an input or cannot be created.

    kind="file": dest must not be a directory; kind="dir": dest must not be a file. Inputs that
    do not exist on disk (hub ids) are skipped.
    """
    given = user_path(dest)
    final = given.resolve()
    special = _special_kind(final)
    if special is not None:  # a writer would replace it with a regular file, or block on it
        raise UserError(f"{what} {dest} is {special}; outputs are regular files or directories: choose another {what}")
    for parent in final.parents:  # the nearest existing ancestor must be a directory
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what} {dest}: {parent} is a file, not a directory; choose another {what}")
            break
    for label, raw in inputs:
        if raw is None or not user_path(raw).exists():
            continue
        source = user_path(raw)
        real = source.resolve()
        same = final == real or (final.exists() and os.path.samefile(final, real))  # also a hard link
        relation = ("is" if same else "is inside" if is_inside(final, real)
                    else "contains" if is_inside(real, final) else None)
        if relation is not None:
            linked = Path(os.path.abspath(given)) != final or Path(os.path.abspath(source)) != real
            raise UserError(f"{what} {dest} {relation} the input {label} {raw}{' (through a link)' if linked else ''}; "
                            f"nothing you gave is ever written: choose another {what.split()[0]}")
    if kind == "file" and final.is_dir():
        raise UserError(f"{what} {dest} is a directory; name a file")
    if kind == "dir" and final.exists() and not final.is_dir():
        raise UserError(f"{what} {dest} is a file; choose a directory")
    return final


def temp_sibling(path: Path, tag: str = "tmp", suffix: str = "") -> Path:
    """A unique hidden name next to path, on the same filesystem (so os.replace is atomic):
    `.<name>.<tag>-<pid>-<random><suffix>`; the suffix keeps a writer's format (e.g. '.png')."""
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"


_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _new_temp_file(final: Path) -> tuple[Path, int]:
    """A temporary sibling of final that this call created (O_EXCL | O_NOFOLLOW), open for writing:
    a file or link planted at that name is never reused, followed or written through."""
    for _ in range(16):
        tmp = temp_sibling(final, suffix=final.suffix or ".tmp")
        try:
            return tmp, os.open(tmp, _EXCLUSIVE, 0o644)
        except FileExistsError:  # someone else's file or link holds this name: draw another
            continue
    raise UserError(f"could not create a temporary file next to {final}: every name drawn was taken")


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def remove(path: Path) -> None:
    """Delete a file, a link (never what it points to) or a folder tree; absent is fine."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary file name next to dest (same suffix); on success it replaces dest.

    A symlink at dest keeps pointing where it did: its target is replaced.
    """
    final = user_path(dest).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _new_temp_file(final)
    os.close(fd)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(dest: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to dest atomically, through the descriptor of a temporary file
    this call created; returns dest."""
    final = user_path(dest).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _new_temp_file(final)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return user_path(dest)


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield an empty hidden sibling directory; on success it takes dest's place in one rename.

    An old dest is moved aside first and deleted after, so dest is always absent, the old
    complete directory, or the new complete one; on failure the sibling is removed.
    """
    final = user_path(dest).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    tmp.mkdir()  # never follows or reuses a planted link: mkdir fails on any existing name
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        old = temp_sibling(final, "old") if (final.exists() or final.is_symlink()) else None
        if old is not None:
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            remove(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish(staging: Path, out_dir: Path, *, last: tuple[str, ...] = ()) -> None:
    """Move each file of staging into out_dir with one rename per file (files named in `last`
    go last, e.g. the page that links the others). Other files in out_dir stay."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [f for f in sorted(staging.iterdir()) if f.is_file() and f.name not in last]
    for f in [*files, *(staging / name for name in last if (staging / name).is_file())]:
        _fsync(f)
        os.replace(f, out_dir / f.name)


class DirLock:
    """An exclusive lock on a directory: DIR/.moe-unlearn.lock, flock'ed, holding the holder's pid.

    The kernel drops a flock when its process dies (even kill -9), so a lock file left by a dead
    process is stale by definition and the next writer simply takes it over.
    """

    def __init__(self, directory: Path, fd: int | None) -> None:
        # the lock file's path is fixed now: release() may run from __del__ at interpreter exit,
        # when this module's globals (LOCK_NAME) may already be gone
        self.directory, self.fd, self.path = directory, fd, directory / LOCK_NAME

    @classmethod
    def acquire(cls, directory: Path, what: str = "output dir") -> DirLock:
        """Take the lock, or raise UserError naming the pid that holds it."""
        path = directory / LOCK_NAME
        if fcntl is None:
            return cls(directory, None)
        for _ in range(5):  # a releasing holder may unlink the file between our open and flock
            fd = _open_lock(path, create=True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise _in_use(what, directory, pid) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return cls(directory, fd)
            os.close(fd)
        raise UserError(f"{what} {directory}: could not take its lock; retry")

    @staticmethod
    def check_free(directory: Path, what: str = "output dir") -> None:
        """Refuse early when a live process holds the lock (takes and drops it at once)."""
        path = directory / LOCK_NAME
        if fcntl is None or not (path.exists() or path.is_symlink()):
            return
        fd = _open_lock(path, create=False)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            raise _in_use(what, directory, _read_pid(fd)) from None
        finally:
            os.close(fd)

    def release(self) -> None:
        """Unlink the lock file, then drop the lock (a waiting writer re-checks the inode)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None

    def __del__(self) -> None:  # a forgotten lock must not outlive its holder object
        self.release()


def _in_use(what: str, directory: Path, pid: str) -> UserError:
    return UserError(f"{what} {directory} is in use by another moe-unlearn process (pid {pid}); "
                     "wait for it to finish, or choose another --out")


def _open_lock(path: Path, *, create: bool) -> int:
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{path} is a symlink; remove it (moe-unlearn never writes through one)") from None
        raise


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode().strip()))
    return "unknown"
