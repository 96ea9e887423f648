"""Every data source and split the job reads: files, local copies of dataset repositories, hub datasets."""

from __future__ import annotations

from pathlib import Path

from moe_unlearn.data import SourceConfig, load_manifest
from moe_unlearn.data.config import AUTO
from moe_unlearn.data.sources import READERS
from moe_unlearn.errors import UserError
from moe_unlearn.preflight.remote import Hub
from moe_unlearn.preflight.resources import CHECKERS, Job, Resource
from moe_unlearn.vocab import SPLITS

SINGLE = (*SPLITS, "utility_mc", "real_authors", "world_facts")


def named_sources(job: Job) -> list[tuple[str, SourceConfig]]:
    """(config key, source) of every source the job reads, training and evaluation."""
    data = job.data
    named = [(f"data.{name}", getattr(data, name, None)) for name in SINGLE]
    for split, sources in (data.eval.by_split() if data.eval else {}).items():
        named += [(f"data.eval.{split}[{i}]", src) for i, src in enumerate(sources)]
    if job.eval is not None:
        named += [(f"eval.knowmem_icl.{name}", getattr(job.eval.knowmem_icl, name)) for name in ("forget", "retain")]
    return [(key, src) for key, src in named if src is not None]


def is_local(path: str) -> bool:
    """A file, or a folder holding a copy of a dataset repository (`dir` or `dir:config`), as load_records reads them."""
    return Path(path).exists() or Path(path.partition(":")[0]).is_dir()


def _how(obtain: str | None) -> str:
    """The source's `obtain` note (how to get gated data), for lines that are not about the network."""
    return f"; to get it: {obtain}" if obtain else ""


def _hub_dataset(path: str, split: str, keys: tuple[str, ...], obtain: str | None, hub: Hub) -> Resource:
    what = f"hub dataset '{path}' (split '{split}')"
    fix = (f"set {', '.join(f'{k}.path' for k in keys)} to a local copy (a JSONL/Parquet/CSV file or the "
           "downloaded repository folder)")
    offline = hub.offline()
    if offline is not None:
        return Resource(what, "missing", keys, f"not on this machine and the machine is offline ({offline})", fix)
    repo, _, config = path.partition(":")
    remote = hub.remote(repo, "dataset")
    if remote.denied is not None:
        return Resource(what, "missing", keys, remote.denied, f"{fix}{_how(obtain)}")
    in_config = [n for n in remote.sizes if config and n.startswith(f"{config}/")]
    size = remote.size(lambda n: n in in_config or not in_config)
    return Resource(what, "download", keys, "from the Hub", size=size)


def _source(path: str, split: str, keys: tuple[str, ...], obtain: str | None, hub: Hub) -> Resource:
    if is_local(path):
        return Resource(f"data '{path}'", "local", keys, "on this machine")
    if Path(path).suffix in READERS:  # the loader's words
        return Resource(f"data file not found: {path}", "missing", keys,
                        fix=f"set {', '.join(f'{k}.path' for k in keys)} to an existing file{_how(obtain)}")
    return _hub_dataset(path, split, keys, obtain, hub)


def _manifest(manifest: str) -> Resource:
    if manifest == AUTO:
        return Resource("the embedded benchmark (data.manifest: auto)", "local", ("data.manifest",),
                        "built on this machine on first use, or taken from its cache")
    try:
        load_manifest(manifest)  # reads one small JSON file and checks that every file it lists exists
    except UserError as e:
        return Resource(str(e), "missing", ("data.manifest",))
    return Resource(f"benchmark manifest '{manifest}'", "local", ("data.manifest",), "on this machine")


@CHECKERS.register("data")
def data_sources(job: Job, hub: Hub) -> list[Resource]:
    """One resource per file or hub dataset split, naming every key that reads it."""
    out = [] if job.data.manifest is None else [_manifest(job.data.manifest)]
    grouped: dict[tuple[str, str], tuple[list[str], str | None]] = {}
    for key, src in named_sources(job):
        split = "" if is_local(src.path) or Path(src.path).suffix in READERS else src.split
        keys, obtain = grouped.setdefault((src.path, split), ([], src.obtain))
        keys.append(key)
    return out + [_source(path, split, tuple(keys), obtain, hub) for (path, split), (keys, obtain) in grouped.items()]
