"""Write access where the job writes, judged without creating anything."""

from __future__ import annotations

import os
from pathlib import Path

from moe_unlearn.errors import UserError
from moe_unlearn.paths import check_destination
from moe_unlearn.preflight.remote import Hub
from moe_unlearn.preflight.resources import CHECKERS, Job, Resource


def unwritable(directory: Path) -> str | None:
    """Why this user cannot create files in `directory` (or, when it does not exist yet, in the
    nearest existing folder above it, where it would be made), or None."""
    here = directory
    while not here.exists() and here != here.parent:
        here = here.parent
    return None if os.access(here, os.W_OK | os.X_OK) else f"{here} is not writable by this user"


@CHECKERS.register("output")
def output(job: Job, hub: Hub) -> list[Resource]:
    """The output path's shape (the writers' own check, in their words), then write access."""
    if job.out is None:
        return []
    what = f"output {'file' if job.out_is_file else 'folder'} '{job.out}'"
    try:
        final = check_destination(job.out, [], what=job.out_key, kind="file" if job.out_is_file else "dir")
    except UserError as e:
        return [Resource(str(e), "missing", (job.out_key,))]
    problem = unwritable(final.parent if job.out_is_file else final)
    if problem is not None:
        return [Resource(what, "missing", (job.out_key,), problem, f"set {job.out_key} to a writable place")]
    return [Resource(what, "local", (job.out_key,), "writable")]
