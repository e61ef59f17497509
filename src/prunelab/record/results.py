"""The results CSV: one row per run, appended safely by many concurrent jobs.

Every writer takes an exclusive lock on ``<csv>.lock`` and appends its whole row in one
fsynced write, so rows from parallel multirun or SLURM jobs are never lost, duplicated or
interleaved; a write that fails (a full disk) leaves the file as it was.  A run's row is
known by its key, `run_dir` and `timestamp` (`RUN_KEY`): appending a row whose key the file
already holds adds nothing, so recording a run twice (a resumed job, `prunelab.record` run
again) leaves one row.  Columns are `RESULT_FIELDS`, in that order.
"""

from __future__ import annotations

import csv
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from prunelab.errors import UserError
from prunelab.record.files import append_csv_line, check_header, csv_line, format_value, parse_line
from prunelab.record.schema import FLOAT_FIELDS, INT_FIELDS, RESULT_FIELDS

DEFAULT_RESULTS_CSV = "results/runs.csv"  # config key: results.csv
RUN_KEY = ("run_dir", "timestamp")  # the columns that identify one finished run


def _checked(field: str, value: Any) -> Any:
    """`value` if its type suits the column `field`, else a `UserError`."""
    if value is None:
        return None
    if field in INT_FIELDS and not isinstance(value, numbers.Integral):
        raise UserError(f"result column '{field}' takes an integer, got {value!r}")
    if field in FLOAT_FIELDS and not isinstance(value, numbers.Real):
        raise UserError(f"result column '{field}' takes a number, got {value!r}")
    return value


def append_row(csv_path: str | os.PathLike[str], row: Mapping[str, Any]) -> bool:
    """Append `row` (exactly the keys of `RESULT_FIELDS`) to the results CSV at `csv_path`, unless the file
    already holds a row with its `RUN_KEY`; returns whether the row was added.

    Creates the file (with its header) and its parent folders if needed.  Raises a
    `UserError` for missing or unknown keys, a value of the wrong type, or an existing file
    whose header differs (the file is never rewritten).  A row without a key (empty
    `run_dir` or `timestamp`) is always appended.
    """
    missing = [f for f in RESULT_FIELDS if f not in row]
    unknown = sorted(set(row) - set(RESULT_FIELDS))
    if missing or unknown:
        raise UserError(
            f"result row: missing keys [{', '.join(missing)}], unknown keys [{', '.join(unknown)}]; "
            "a row has exactly the columns of prunelab.record.schema.RESULT_FIELDS"
        )
    values = [_checked(f, row[f]) for f in RESULT_FIELDS]
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if holds_run(path, row):
            return False
        append_csv_line(path, RESULT_FIELDS, csv_line(values))
    return True


def holds_run(csv_path: str | os.PathLike[str], row: Mapping[str, Any]) -> bool:
    """Whether the results CSV at `csv_path` has a row with the `RUN_KEY` of `row` (False for a row without one).

    Reads the cells as text, so a line torn by an older writer does not stop the search."""
    key = [format_value(row.get(f)) for f in RUN_KEY]
    path = Path(csv_path)
    if "" in key or not path.is_file():
        return False
    at = [RESULT_FIELDS.index(f) for f in RUN_KEY]
    with path.open(newline="", encoding="utf-8") as f:
        return any(len(cells) == len(RESULT_FIELDS) and [cells[i] for i in at] == key for cells in csv.reader(f))


def check_appendable(csv_path: str | os.PathLike[str]) -> None:
    """Before a run: a `UserError` naming `results.csv` unless a row can be appended at `csv_path` (the file,
    or the nearest existing folder above it, writable; an existing file's header the current columns)."""
    path = Path(csv_path)
    if path.is_dir():
        raise UserError(f"results.csv={path} is a folder: give the path of a .csv file")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UserError(f"results.csv={path} is not writable: fix its permissions or choose another file")
        with path.open(encoding="utf-8", newline="") as f:
            first = f.readline()
        if first:
            check_header(path, parse_line(first), RESULT_FIELDS)
        return
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"results.csv={path}: {folder} is not a writable folder: choose another results.csv")


def _parse(field: str, text: str) -> Any:
    """A CSV cell back to its value: empty -> None, typed by `INT_FIELDS` / `FLOAT_FIELDS`."""
    if text == "":
        return None
    if field in INT_FIELDS:
        return int(text)
    if field in FLOAT_FIELDS:
        return float(text)
    return text


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of the results CSV at `path`, typed back (empty cells are None)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        check_header(path, header, RESULT_FIELDS)
        rows = []
        for cells in reader:
            if len(cells) != len(RESULT_FIELDS):
                raise UserError(
                    f"{path}:{reader.line_num}: {len(cells)} fields instead of "
                    f"{len(RESULT_FIELDS)}; repair or delete that line"
                )
            rows.append({f: _parse(f, c) for f, c in zip(RESULT_FIELDS, cells)})
        return rows
