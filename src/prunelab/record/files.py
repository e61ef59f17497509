"""Low-level writers shared by the record layer: CSV lines, CSV appends, atomic JSON."""

from __future__ import annotations

import csv
import io
import json
import numbers
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prunelab.errors import UserError


def format_value(value: Any) -> str:
    """One CSV cell: None -> empty, ints as ints, floats at repr precision, mappings as JSON."""
    if value is None:
        return ""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return str(value)


def csv_line(values: Iterable[Any]) -> str:
    """Format `values` as one complete CSV line, newline included."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([format_value(v) for v in values])
    return buf.getvalue()


def parse_line(line: str) -> list[str]:
    """The cells of one CSV line."""
    return next(csv.reader([line]), [])


def check_header(path: Path, header: Sequence[str], columns: Sequence[str]) -> None:
    """Raise a `UserError` naming `path` unless `header` is exactly `columns`."""
    if list(header) == list(columns):
        return
    missing = [c for c in columns if c not in header]
    extra = [c for c in header if c not in columns]
    parts = [f"missing {', '.join(missing)}"] if missing else []
    parts += [f"unexpected {', '.join(extra)}"] if extra else []
    detail = "; ".join(parts) or "same names in a different order"
    raise UserError(
        f"{path}: header does not match the current columns ({detail}); "
        "move the file aside (rename it) and a new one is started"
    )


def append_csv_line(path: Path, columns: Sequence[str], line: str) -> int:
    """Append `line` to the CSV at `path` in one write, fsynced; whole or not at all.

    The header is written first (in the same write) when the file is new or empty; an
    existing header must equal `columns`.  If the file does not end in a newline (a writer
    died mid-line) a newline is added first, so the new row stays whole.  A write or fsync
    that fails (a full disk) or is interrupted cuts the file back to its length before the
    append and re-raises: no torn line is left.  Returns the byte offset at which `line`
    starts.  Callers that share the file take a lock around this.
    """
    with path.open("a+b", buffering=0) as f:
        end = f.seek(0, os.SEEK_END)
        if not end:
            prefix = csv_line(columns)
        else:
            f.seek(0)
            check_header(path, parse_line(f.readline().decode("utf-8")), columns)
            f.seek(end - 1)
            prefix = "" if f.read(1) == b"\n" else "\n"
        head = prefix.encode("utf-8")
        try:
            _write_all(f, head + line.encode("utf-8"))
            os.fsync(f.fileno())
        except BaseException:
            f.truncate(end)
            raise
    return end + len(head)


def _write_all(f: Any, data: bytes) -> None:
    """Write all of `data` to the unbuffered file `f` (a raw write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[f.write(view):]


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as JSON to `path` so readers see the old file or the new one, never a part.

    The text goes to a temporary file beside `path`, is fsynced, then renamed over `path`.  A write that
    fails (a read-only folder, a full disk) raises an OSError naming `path` and leaves no temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("x", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        if tmp.exists():  # an unlink of a missing file fails on a read-only file system
            tmp.unlink()
