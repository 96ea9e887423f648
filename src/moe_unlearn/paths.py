"""Path checks shared by every command that writes next to a user's model."""

from __future__ import annotations

from pathlib import Path


def is_inside(path: Path, directory: Path) -> bool:
    """True when path is directory itself or lies below it (after resolving links and '..')."""
    path, directory = Path(path).expanduser().resolve(), Path(directory).expanduser().resolve()
    return path == directory or directory in path.parents
