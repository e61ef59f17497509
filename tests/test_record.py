"""The record layer: results CSV, history, atomic JSON, provenance and the W&B mirror."""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import subprocess
import sys
from datetime import datetime, timezone
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from prunelab.errors import UserError
from prunelab.record import (
    RESULT_FIELDS,
    HistoryWriter,
    Mirror,
    append_row,
    command_line,
    device_name,
    git_sha,
    open_mirror,
    read_results,
    utc_timestamp,
    write_json_atomic,
)
from prunelab.record.wandb_mirror import WandbMirror

HISTORY_COLUMNS = ("phase", "epoch", "lr", "train_loss", "train_acc", "test_acc", "epoch_time_s")


def make_row(**values: object) -> dict:
    """A complete result row; `values` override the defaults."""
    row: dict = {field: None for field in RESULT_FIELDS}
    row.update(method="nuclear", model="resnet56", dataset="cifar10", seed=0, target="ratio=0.5",
               params=1000, macs=123456, acc_final=93.25, command="python run.py", extra="{}")
    row.update(values)
    return row


# --- results CSV -----------------------------------------------------------------------------


def _writer(path: str, writer: int, rows: int, start: Event) -> None:
    start.wait()
    for i in range(rows):
        # a long field with quotes and commas makes a torn or interleaved row visible
        command = f"python run.py seed={writer} i={i} note='a, \"quoted\" value' " + "x" * 3000
        append_row(path, make_row(seed=writer, epochs_finetune=i, command=command))


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "results" / "runs.csv"
    ctx = mp.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), w, 25, start)) for w in range(8)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0

    with path.open(newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == list(RESULT_FIELDS)
    assert len(lines) == 1 + 200
    assert all(len(cells) == len(RESULT_FIELDS) for cells in lines)
    rows = read_results(path)
    pairs = [(r["seed"], r["epochs_finetune"]) for r in rows]
    assert sorted(pairs) == [(w, i) for w in range(8) for i in range(25)]
    assert all(r["command"].endswith("x" * 3000) for r in rows)


def test_round_trip_keeps_types(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "runs.csv"
    append_row(path, make_row(acc_final=0.1 + 0.2, macs_reduction=1 / 3, extra={"b": 1, "a": 2.5}))
    append_row(path, make_row(seed=7, params=None))
    first, second = read_results(path)
    assert first["acc_final"] == 0.1 + 0.2  # repr precision survives
    assert first["macs_reduction"] == 1 / 3
    assert first["params"] == 1000 and isinstance(first["params"], int)
    assert json.loads(first["extra"]) == {"a": 2.5, "b": 1}
    assert first["base_acc"] is None and first["device"] is None
    assert second["seed"] == 7 and second["params"] is None
    assert path.read_text().count("method,model") == 1


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ({k: v for k, v in make_row().items() if k != "acc_final"}, "acc_final"),
        (make_row(accuracy=1.0), "accuracy"),
        (make_row(params=12.5), "params"),
        (make_row(acc_final="high"), "acc_final"),
    ],
)
def test_bad_rows_are_refused(tmp_path: Path, row: dict, named: str) -> None:
    path = tmp_path / "runs.csv"
    with pytest.raises(UserError, match=named):
        append_row(path, row)
    assert not path.exists()


def test_header_mismatch_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("method,model,acc\nl1,vgg16,93.0\n")
    with pytest.raises(UserError, match=r"runs\.csv.*move the file aside"):
        append_row(path, make_row())
    with pytest.raises(UserError, match=r"runs\.csv"):
        read_results(path)
    assert path.read_text() == "method,model,acc\nl1,vgg16,93.0\n"


def test_append_after_a_torn_line_keeps_the_new_row_whole(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    append_row(path, make_row(seed=1))
    with path.open("a") as f:
        f.write("nuclear,resnet56,cifa")  # a writer killed mid-line
    append_row(path, make_row(seed=2))
    lines = path.read_text().splitlines()
    assert lines[-2] == "nuclear,resnet56,cifa"
    assert list(csv.reader([lines[-1]]))[0][RESULT_FIELDS.index("seed")] == "2"


# --- metrics.json ----------------------------------------------------------------------------


def test_write_json_atomic_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.json"
    write_json_atomic(path, {"acc_final": 93.1})
    write_json_atomic(path, {"acc_final": 93.4, "seed": 1})
    assert json.loads(path.read_text()) == {"acc_final": 93.4, "seed": 1}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"acc_final": 93.4, "seed": 1}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


# --- history.csv ------------------------------------------------------------------------------


def _epochs(writer: HistoryWriter, phase: str, epochs: range) -> None:
    for e in epochs:
        writer.append({"phase": phase, "epoch": e, "lr": 0.1, "test_acc": 50.0 + e})


def _keys(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as f:
        return [(r["phase"], r["epoch"]) for r in csv.DictReader(f)]


def test_history_resume_replaces_rerun_epochs(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    first = HistoryWriter(path, HISTORY_COLUMNS)
    _epochs(first, "baseline", range(3))
    _epochs(first, "finetune", range(4))
    with path.open("a") as f:
        f.write("finetune,4,0.1")  # killed mid-line

    resumed = HistoryWriter(path, HISTORY_COLUMNS)  # checkpoint was after finetune epoch 1
    _epochs(resumed, "finetune", range(2, 5))
    expected = [("baseline", str(e)) for e in range(3)] + [("finetune", str(e)) for e in range(5)]
    assert _keys(path) == expected
    assert path.read_text().count("phase,epoch") == 1


def test_history_resume_at_a_phase_start_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    _epochs(HistoryWriter(path, HISTORY_COLUMNS), "baseline", range(2))
    _epochs(HistoryWriter(path, HISTORY_COLUMNS), "finetune", range(2))
    assert _keys(path) == [("baseline", "0"), ("baseline", "1"), ("finetune", "0"), ("finetune", "1")]


def test_history_refuses_other_columns_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    writer = HistoryWriter(path, HISTORY_COLUMNS)
    with pytest.raises(UserError, match="val_acc"):
        writer.append({"phase": "baseline", "epoch": 0, "val_acc": 1.0})
    _epochs(writer, "baseline", range(1))
    with pytest.raises(UserError, match=r"history\.csv"):
        HistoryWriter(path, ("phase", "epoch", "lr"))


# --- provenance -------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


def test_git_sha_clean_dirty_and_outside_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    assert git_sha(repo) == "unknown"  # no commit yet
    (repo / "a.py").write_text("x = 1\n")
    (repo / "results").mkdir()
    (repo / "results" / "runs.csv").write_text("acc\n1\n")
    _git(repo, "add", "a.py", "results/runs.csv")
    _git(repo, "commit", "-q", "-m", "init")
    sha = git_sha(repo)
    assert len(sha) == 40 and int(sha, 16) >= 0
    (repo / "new.txt").write_text("untracked files do not count\n")
    (repo / "results" / "runs.csv").write_text("acc\n1\n2\n")
    assert git_sha(repo) == sha  # results are outputs, not code
    assert git_sha(repo / "results") == sha  # the same from a subdirectory
    (repo / "README.md").write_text("prose\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "notes.md").write_text("prose\n")
    _git(repo, "add", "README.md", "docs/notes.md")
    _git(repo, "commit", "-q", "-m", "docs")
    sha = git_sha(repo)
    (repo / "README.md").write_text("more prose\n")
    (repo / "docs" / "notes.md").write_text("more prose\n")
    assert git_sha(repo) == sha  # prose cannot change a number
    (repo / "a.py").write_text("x = 2\n")
    assert git_sha(repo) == sha + "+dirty"

    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_sha(outside) == "unknown"
    monkeypatch.setenv("PATH", str(outside))  # no git at all
    assert git_sha(repo) == "unknown"


def test_command_line_is_shell_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "argv", ["run.py", "-m", "seed=1,2", "model.widths=[8, 16]"])
    assert command_line() == "python run.py -m seed=1,2 'model.widths=[8, 16]'"
    assert command_line(["seed=2", "model.widths=[8, 16]"]) == "python run.py seed=2 'model.widths=[8, 16]'"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert command_line([]) == "torchrun --nproc-per-node=4 --nnodes=2 run.py"


def test_device_name_and_timestamp() -> None:
    name = device_name("cpu")
    assert name.startswith("cpu: ") and name.endswith("cores)")
    assert device_name("cpu", world_size=2).startswith("cpu: 2x ")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = datetime.fromisoformat(utc_timestamp())
    assert stamp.utcoffset() == timezone.utc.utcoffset(None)
    assert before <= stamp <= datetime.now(timezone.utc)  # now, to the second


# --- W&B mirror -------------------------------------------------------------------------------


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every file W&B writes (config, cache, staging) under tmp_path."""
    home = tmp_path / "wandb_home"
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    for var in ("WANDB_MODE", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the mirror itself logged (W&B's own debug logging is ignored)."""
    return [r for r in caplog.records if r.name == "prunelab.record.wandb_mirror"]


def _wandb_cfg(mode: str) -> dict:
    return {"name": "wandb", "mode": mode, "project": "prunelab", "entity": None, "group": None,
            "tags": ["test"], "job_type": "test"}


def test_logger_none_and_bad_names() -> None:
    mirror = open_mirror({"name": "none"}, "unused", {}, "run")
    assert type(mirror) is Mirror
    mirror.log({"acc": 1.0}, step=0)
    mirror.finish()
    with pytest.raises(UserError, match="tensorboard"):
        open_mirror({"name": "tensorboard"}, "unused", {}, "run")
    with pytest.raises(UserError, match="logger.mode"):
        open_mirror({"name": "wandb", "mode": "cloud"}, "unused", {}, "run")


def test_wandb_disabled(wandb_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    with open_mirror(_wandb_cfg("disabled"), wandb_env / "run", {"seed": 0}, "run") as mirror:
        mirror.log({"train_loss": 1.0}, step=0)
        mirror.summary({"acc_final": 90.0})
    assert not _warnings(caplog)


def test_wandb_offline_one_run_per_job_inside_the_run_dir(
    wandb_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cwd_wandb = Path.cwd() / "wandb"
    before = sorted(cwd_wandb.rglob("*")) if cwd_wandb.exists() else None
    run_ids = []
    for job in range(2):
        run_dir = wandb_env / f"job{job}"
        mirror = open_mirror(_wandb_cfg("offline"), run_dir, {"seed": job}, f"job{job}", group="sweep")
        assert isinstance(mirror, WandbMirror)
        for epoch in range(2):
            mirror.log({"train_loss": 1.0 / (epoch + 1)}, step=epoch)
        mirror.summary({"acc_final": 90.0 + job})
        mirror.finish()
        (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
        (data,) = offline_run.glob("run-*.wandb")
        assert data.stat().st_size > 0
        run_ids.append(data.stem)
    assert len(set(run_ids)) == 2
    assert not _warnings(caplog)
    after = sorted(cwd_wandb.rglob("*")) if cwd_wandb.exists() else None
    assert before == after  # nothing written into the working directory


def test_wandb_init_failure_warns_once_and_mirror_is_a_no_op(
    wandb_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wandb = pytest.importorskip("wandb")

    def broken_init(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no route to host\n(details)")

    monkeypatch.setattr(wandb, "init", broken_init)
    mirror = open_mirror(_wandb_cfg("online"), wandb_env / "run", {}, "run")
    assert type(mirror) is Mirror
    mirror.log({"acc": 1.0}, step=0)
    mirror.summary({"acc_final": 1.0})
    mirror.finish()
    (warning,) = _warnings(caplog)
    assert warning.levelno == logging.WARNING
    assert "init failed" in warning.getMessage() and "\n" not in warning.getMessage()
    append_row(wandb_env / "runs.csv", make_row())
    assert len(read_results(wandb_env / "runs.csv")) == 1


def test_wandb_error_mid_run_turns_the_mirror_off(caplog: pytest.LogCaptureFixture) -> None:
    class FlakyRun:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def log(self, metrics: dict, step: int) -> None:
            self.calls.append("log")
            raise ConnectionError("lost")

        def finish(self, exit_code: int = 0) -> None:
            self.calls.append("finish")

    run = FlakyRun()
    mirror = WandbMirror(run)
    mirror.log({"acc": 1.0}, step=0)
    mirror.log({"acc": 2.0}, step=1)
    mirror.finish()
    assert run.calls == ["log"]
    (warning,) = _warnings(caplog)
    assert "log failed" in warning.getMessage()
