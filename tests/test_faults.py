"""Faults and crash windows: a full disk, a read-only folder, a kill between two writes, Ctrl-C, replaced data."""

from __future__ import annotations

import errno
import json
import pathlib
from pathlib import Path

import pytest

from prunelab.record import RESULT_FIELDS, append_row, read_results
from prunelab.record.__main__ import main as record_main


def make_row(**values: object) -> dict:
    """A complete result row of a finished run; `values` override the defaults."""
    row: dict = {field: None for field in RESULT_FIELDS}
    row.update(method="l1", model="resnet20", dataset="cifar10", seed=0, params=1000, acc_final=91.5,
               run_dir="outputs/a", timestamp="2025-01-01T00:00:00+00:00", extra="{}")
    row.update(values)
    return row


class DiskFull:
    """A binary file that takes `room` more bytes, then fails every write with ENOSPC."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = self.file.write(bytes(data[: self.room]))
        self.room -= taken
        return taken

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self) -> DiskFull:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def fill_disk_on(monkeypatch: pytest.MonkeyPatch, target: Path, room: int) -> None:
    """From now on, files opened for writing at `target` run out of space after `room` bytes."""
    real_open = pathlib.Path.open

    def open_(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return DiskFull(f, room) if self == target and set(mode) & set("wax+") else f

    monkeypatch.setattr(pathlib.Path, "open", open_)


# --- the results CSV ------------------------------------------------------------------------


@pytest.mark.parametrize("room", [0, 40])
def test_a_full_disk_leaves_no_torn_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    path = tmp_path / "runs.csv"
    append_row(path, make_row(run_dir="outputs/first"))
    before = path.read_bytes()
    with monkeypatch.context() as m:
        fill_disk_on(m, path, room)
        with pytest.raises(OSError, match="No space left"):
            append_row(path, make_row(run_dir="outputs/second"))
    assert path.read_bytes() == before
    assert record_main([str(_metrics(tmp_path, make_row(run_dir="outputs/second"))), "--csv", str(path)]) == 0
    assert [r["run_dir"] for r in read_results(path)] == ["outputs/first", "outputs/second"]


def test_a_full_disk_on_a_new_file_leaves_an_empty_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs.csv"
    fill_disk_on(monkeypatch, path, 100)  # inside the header
    with pytest.raises(OSError):
        append_row(path, make_row())
    monkeypatch.undo()
    assert path.read_bytes() == b""
    append_row(path, make_row())
    assert len(read_results(path)) == 1


def _metrics(folder: Path, record: dict) -> Path:
    path = folder / "metrics.json"
    path.write_text(json.dumps(record))
    return path


def test_a_run_is_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    assert append_row(path, make_row())
    assert not append_row(path, make_row(acc_final=1.0))  # same run_dir and timestamp: the same run
    assert append_row(path, make_row(timestamp="2025-01-02T00:00:00+00:00"))  # the same dir, a later run
    assert append_row(path, make_row(run_dir=None, timestamp=None))  # rows without a key are always added
    assert append_row(path, make_row(run_dir=None, timestamp=None))
    assert [r["acc_final"] for r in read_results(path)] == [91.5] * 4


def test_the_record_command_twice_adds_one_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    metrics, csv_path = _metrics(tmp_path, make_row()), tmp_path / "runs.csv"
    assert record_main([str(metrics), "--csv", str(csv_path)]) == 0
    assert "row added" in capsys.readouterr().out
    assert record_main([str(metrics), "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "already recorded" in out and "nothing added" in out and len(out.strip().splitlines()) == 1
    assert len(read_results(csv_path)) == 1


def test_the_run_key_is_found_behind_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    append_row(path, make_row())
    with path.open("a") as f:
        f.write("l1,resnet20,cifa")  # left by a writer that died mid-line (before whole-or-nothing writes)
    assert not append_row(path, make_row())
