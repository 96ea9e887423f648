"""Where commands may write, and how: one destination check and atomic writes for every writer.

`check_destination` refuses an output path that is, contains or lies inside any input (model
directory, data file, config, benchmark directory), comparing resolved paths so symlinks count,
and an output below a regular file. `atomic_write` / `atomic_path` / `atomic_dir` write into a
hidden sibling and rename it into place: a reader (or a later run) sees the old file, the new
one, or none, never half of one; a hard link to an input is replaced, never written through.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Literal

from moe_unlearn.errors import UserError

Inputs = Iterable[tuple[str, "str | Path | None"]]  # (what it is, e.g. "model dir"; its path)


def is_inside(path: Path, directory: Path) -> bool:
    """True when path is directory itself or lies below it (after resolving links and '..')."""
    path, directory = Path(path).expanduser().resolve(), Path(directory).expanduser().resolve()
    return path == directory or directory in path.parents


def check_destination(dest: str | Path, inputs: Inputs, *, what: str = "--out",
                      kind: Literal["file", "dir", "any"] = "file") -> Path:
    """The resolved destination, after refusing one that overlaps an input or cannot be created.

    kind="file": dest must not be a directory; kind="dir": dest must not be a file. Inputs that
    do not exist on disk (hub ids) are skipped.
    """
    given = Path(dest).expanduser()
    final = given.resolve()
    for parent in final.parents:  # the nearest existing ancestor must be a directory
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what} {dest}: {parent} is a file, not a directory; choose another {what}")
            break
    for label, raw in inputs:
        if raw is None or not Path(raw).expanduser().exists():
            continue
        source = Path(raw).expanduser()
        real = source.resolve()
        same = final == real or (final.exists() and os.path.samefile(final, real))
        relation = ("is" if same else "is inside" if real in final.parents
                    else "contains" if final in real.parents else None)
        if relation is not None:
            linked = Path(os.path.abspath(given)) != final or Path(os.path.abspath(source)) != real
            raise UserError(f"{what} {dest} {relation} the input {label} {raw}{' (through a link)' if linked else ''}; "
                            f"nothing you gave is ever written: choose another {what.split()[0]}")
    if kind == "file" and final.is_dir():
        raise UserError(f"{what} {dest} is a directory; name a file")
    if kind == "dir" and final.exists() and not final.is_dir():
        raise UserError(f"{what} {dest} is a file; choose a directory")
    return final


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A unique hidden name next to path, on the same filesystem (so os.replace is atomic)."""
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary file name next to dest (same suffix); on success it replaces dest.

    A symlink at dest keeps pointing where it did: its target is replaced.
    """
    final = Path(dest).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final).with_suffix(final.suffix or ".tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(dest: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to dest atomically; returns dest."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(dest)


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield an empty hidden sibling directory; on success it takes dest's place in one rename.

    An old dest is moved aside first and deleted after, so dest is always absent, the old
    complete directory, or the new complete one; on failure the sibling is removed.
    """
    final = Path(dest).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    tmp.mkdir()
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
            _remove(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish(staging: Path, out_dir: Path, *, last: tuple[str, ...] = ()) -> None:
    """Move each file of staging into out_dir with one rename per file (files named in `last`
    go last, e.g. the page that links the others). Other files in out_dir stay."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted((f for f in staging.iterdir() if f.is_file()), key=lambda f: (f.name in last, last.index(f.name)
                                                                                  if f.name in last else 0, f.name))
    for f in files:
        _fsync(f)
        os.replace(f, out_dir / f.name)
