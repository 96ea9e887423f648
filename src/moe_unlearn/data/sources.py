"""Reading records from JSONL / JSON / Parquet / CSV files or `datasets` hub names.

A source that exists on disk (or has a known file suffix) is a file; anything else is a hub
name, optionally `name:config` (e.g. `cais/wmdp:wmdp-bio`), loaded only when online, from
its `split`. A directory holding a copy of a hub dataset repository (README.md `configs:` and
its data files, as `huggingface-cli download --repo-type dataset` writes it) loads through
`datasets` the same way, offline: `path/to/wmdp:wmdp-bio`. A source may also name a row `transform` (data/formats.py), a `group` tag given
to each of its records (results broken down per group, e.g. RWKU's probe levels) and an
`obtain` note shown when it cannot be loaded (gated data: how to get access).
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from moe_unlearn.config import require
from moe_unlearn.data.formats import TRANSFORMS, select_rows
from moe_unlearn.data.schemas import SCHEMAS, validate_record
from moe_unlearn.errors import UserError
from moe_unlearn.hub import offline_reason
from moe_unlearn.paths import regular_file
from moe_unlearn.registry import Registry

Rows = Iterator[tuple[str, Any]]  # (location such as "line 3", raw row)
CSV_FIELD_LIMIT = 64 * 2**20  # characters per CSV field (the csv module's default is 128 Ki)
READERS: Registry[Callable[[Path], Rows]] = Registry("file format")


@dataclass
class SourceConfig:
    """One data source in a config: a file path or hub name, its kind and field mapping."""

    path: str
    kind: Literal["text", "qa", "mc", "completion"] = "qa"
    fields: dict[str, str] | None = None  # our name -> the file's name, e.g. {question: prompt}
    split: str = "train"  # hub datasets only
    transform: str | None = None  # a row transform of data/formats.py, e.g. mc_to_qa
    group: str | None = None  # tag stored in each record's `group` field
    obtain: str | None = None  # how to get this data; shown when it cannot be loaded
    use_select: bool = True  # false: data.select does not filter this source

    def validate(self, where: str) -> None:
        require(bool(self.path), f"'{where}.path' must name a file or dataset")
        for ours in self.fields or {}:
            names = [f.name for f in SCHEMAS.get(self.kind)]
            require(ours in names, f"'{where}.fields' maps '{ours}', which kind '{self.kind}' does not have; "
                                   f"its fields are: {', '.join(names)}")
        if self.transform is not None:
            TRANSFORMS.get(self.transform)  # UserError with a suggestion for a typo

    def load(self, select: dict[str, list[str]] | None = None) -> list[dict]:
        """Validated records; `select` keeps the rows whose selected fields match (data.select)."""
        return load_records(self.path, kind=self.kind, fields=self.fields, split=self.split, transform=self.transform,
                            group=self.group, select=select if self.use_select else None, obtain=self.obtain)


@READERS.register(".jsonl")
def _jsonl(path: Path) -> Rows:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: line {n}: not valid JSON ({e.msg}); fix or delete the line") from None
            except ValueError as e:  # e.g. an integer of more than 4300 digits
                raise UserError(f"{path}: line {n}: not valid JSON ({str(e).split(':')[0]})") from None
            except RecursionError:
                raise UserError(f"{path}: line {n}: JSON nested too deeply; a record is a flat object") from None
            yield f"line {n}", row


@READERS.register(".json")
def _json(path: Path) -> Rows:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({str(e).split(':')[0]})") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply; a .json source is a list of flat records") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: a .json source must hold a list of records (or use .jsonl)")
    for n, row in enumerate(data, 1):
        yield f"record {n}", row


@READERS.register(".csv")
def _csv(path: Path) -> Rows:
    limit = csv.field_size_limit(min(CSV_FIELD_LIMIT, sys.maxsize))  # long texts are real data
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    hint = " (an unclosed quote?)" if "field larger" in str(e) else ""
                    raise UserError(f"{path}: line {reader.line_num}: not valid CSV: {e}{hint}") from None
                yield f"line {reader.line_num}", {k: v for k, v in row.items() if k is not None and v != ""}
    finally:
        csv.field_size_limit(limit)


@READERS.register(".parquet")
def _parquet(path: Path) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    for n, row in enumerate(rows, 1):
        yield f"row {n}", row


@contextmanager
def _datasets_quiet(*, progress: bool) -> Iterator[None]:
    """Without datasets' own log lines (a failure is our one line) and, unless `progress`, its
    progress bars (reading a local copy is quick; a download shows its bar)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from datasets.utils import logging as datasets_logging

    level, bars_off = datasets_logging.get_verbosity(), are_progress_bars_disabled()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)
    if not progress:
        disable_progress_bars()
    try:
        yield
    finally:
        datasets_logging.set_verbosity(level)
        if not bars_off:
            enable_progress_bars()


def _hub_rows(name: str, split: str, obtain: str | None = None) -> tuple[str, Rows]:
    how = f"; {obtain}" if obtain else ""
    dataset, _, config = name.partition(":")
    local = Path(dataset).is_dir()  # a local copy of a hub dataset repository: no network needed
    offline = None if local else offline_reason()  # at once, not after the hub client's retries
    if offline is not None:
        raise UserError(f"'{name}' is neither a file nor reachable: hub datasets need network access and "
                        f"the machine is offline ({offline}); download it and point to the JSONL/Parquet/CSV file{how}")
    import datasets

    try:
        with _datasets_quiet(progress=not local):
            if local:  # read into a private cache: datasets' shared cache can serve another copy of the same name
                with tempfile.TemporaryDirectory() as tmp:
                    ds = list(datasets.load_dataset(dataset, config or None, split=split, cache_dir=tmp))
            else:
                ds = datasets.load_dataset(dataset, config or None, split=split)
    except Exception as e:  # the hub raises many types; all mean "cannot load this name"
        raise UserError(f"cannot load hub dataset '{name}' (split '{split}'): "
                        f"{' '.join(str(e).split())[:200]}{how}") from None
    return f"hub dataset {name}", ((f"row {n}", row) for n, row in enumerate(ds, 1))


def load_records(source: str | Path, *, kind: str, fields: dict[str, str] | None = None,
                 split: str = "train", transform: str | None = None, group: str | None = None,
                 select: dict[str, list[str]] | None = None, obtain: str | None = None) -> list[dict]:
    """Validated records of one kind ("text" | "qa" | "mc" | "completion") with our field names.

    Order: read rows -> keep the rows `select` matches -> `transform` -> field mapping and
    schema validation -> tag with `group`.
    """
    SCHEMAS.get(kind)
    fields = dict(fields or {})
    fn = None if transform is None else TRANSFORMS.get(transform)
    path = Path(source)
    if not path.is_file() and Path(str(source).partition(":")[0]).is_dir():
        label, rows = _hub_rows(str(source), split, obtain)  # a dataset repository on disk, `dir:config`
    elif path.exists() or path.suffix in READERS:
        if not path.exists():
            raise UserError(f"data file not found: {path}{f'; {obtain}' if obtain else ''}")
        regular_file(path, "data file")  # a FIFO or device would block the read
        reader = READERS.get(path.suffix)
        label, rows = str(path), reader(path)
    else:
        label, rows = _hub_rows(str(source), split, obtain)
    try:
        listed = list(rows)
        picked = select_rows(listed, select)
        if listed and not picked:
            wanted = "; ".join(f"{k} in {v}" for k, v in (select or {}).items())
            raise UserError(f"{label}: no record matches data.select ({wanted})")
        records = []
        for loc, row in picked:
            where = f"{label}: {loc}"
            if fn is not None and isinstance(row, dict):
                try:
                    row = fn(row)
                except ValueError as e:
                    raise UserError(f"{where}: {e}") from None
            rec = validate_record(row, kind, fields, where)
            records.append(rec if group is None else {**rec, "group": group})
    except UnicodeDecodeError:
        raise UserError(f"{label}: not readable as UTF-8 text; is it the right file?") from None
    if not records:
        raise UserError(f"{label}: no records; the data set is empty")
    return records
