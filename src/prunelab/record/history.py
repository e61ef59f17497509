"""The per-epoch ``history.csv`` of a run dir, safe to resume.

Rows are keyed by ``(phase, epoch)``.  Appending a row whose key is already in the file
first cuts the file back to just before that key's first row: a resumed run that re-runs
epochs replaces what the interrupted attempt wrote after its checkpoint, and never
duplicates it.  A resumed run therefore needs no extra call; it just appends.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunelab.errors import UserError
from prunelab.record.files import append_csv_line, check_header, csv_line, format_value, parse_line


class HistoryWriter:
    """Appends one flushed, fsynced CSV line per epoch to `path` (one writer per file)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str],
        key: Sequence[str] = ("phase", "epoch"),
    ) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.key = tuple(key)
        if not set(self.key) <= set(self.columns):
            raise UserError(f"history key {self.key} must be among its columns {self.columns}")
        self._starts: dict[tuple[str, ...], int] = {}  # key -> byte offset of its first row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()

    def _key_of(self, cells: Sequence[str]) -> tuple[str, ...]:
        return tuple(cells[self.columns.index(k)] for k in self.key)

    def _load(self) -> None:
        """Index the rows already written; drop a last line left incomplete by a crash."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            os.truncate(self.path, whole)
        lines = data[:whole].splitlines(keepends=True)
        if not lines:
            return
        check_header(self.path, parse_line(lines[0].decode("utf-8")), self.columns)
        offset = len(lines[0])
        for line in lines[1:]:
            self._starts.setdefault(self._key_of(parse_line(line.decode("utf-8"))), offset)
            offset += len(line)

    def append(self, row: Mapping[str, Any]) -> None:
        """Write `row` (a subset of the columns; absent ones stay empty) as the next line."""
        unknown = sorted(set(row) - set(self.columns))
        if unknown:
            raise UserError(f"history row: unknown keys {unknown}; columns are {self.columns}")
        key = tuple(format_value(row.get(k)) for k in self.key)
        cut = self._starts.get(key)
        if cut is not None:
            os.truncate(self.path, cut)
            self._starts = {k: at for k, at in self._starts.items() if at < cut}
        line = csv_line(row.get(c) for c in self.columns)
        self._starts[key] = append_csv_line(self.path, self.columns, line)
