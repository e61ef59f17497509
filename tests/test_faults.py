"""Faults and crash windows: a full disk, a read-only folder, a kill between two writes, Ctrl-C, replaced data."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, TINY
from prunelab import pipeline
from prunelab.config import dataset_config
from prunelab.data import build_dataset
from prunelab.errors import UserError
from prunelab.record import RESULT_FIELDS, append_row, read_results
from prunelab.record.__main__ import main as record_main
from prunelab.train.baseline import cache_key


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
        taken = self.file.write(data[: self.room])
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


# --- crash windows at the end of a run -------------------------------------------------------


def killed_after(monkeypatch: pytest.MonkeyPatch, name: str, *, append: bool) -> None:
    """The job dies right at `pipeline.append_row`: after appending its row (`append`) or before."""
    real = pipeline.append_row

    def die(*args, **kwargs):
        if append:
            real(*args, **kwargs)
        raise KeyboardInterrupt(name)

    monkeypatch.setattr(pipeline, "append_row", die)


def test_killed_after_the_row_then_resumed_keeps_one_row(tiny_cfg, tmp_path: Path, monkeypatch) -> None:
    with monkeypatch.context() as m:
        killed_after(m, "after the append", append=True)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(tiny_cfg("method=l1"), tmp_path / "a")
    record = pipeline.run(tiny_cfg("method=l1", "resume=true"), tmp_path / "b")
    rows = read_results(tmp_path / "runs.csv")
    assert len(rows) == 1 and rows[0]["timestamp"] == record["timestamp"] and not (tmp_path / "b").exists()


def test_killed_before_the_row_then_resumed_in_its_run_dir_adds_the_row(tiny_cfg, tmp_path: Path,
                                                                        monkeypatch) -> None:
    run_dir = tmp_path / "run"  # a fixed hydra.run.dir
    with monkeypatch.context() as m:
        killed_after(m, "after metrics.json", append=False)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(tiny_cfg("method=l1"), run_dir)
    assert (run_dir / "metrics.json").is_file() and not (tmp_path / "runs.csv").exists()
    record = pipeline.run(tiny_cfg("method=l1", "resume=true"), run_dir)
    rows = read_results(tmp_path / "runs.csv")
    assert [r["timestamp"] for r in rows] == [record["timestamp"]]
    assert record == json.loads((run_dir / "metrics.json").read_text())
    pipeline.run(tiny_cfg("method=l1", "resume=true"), run_dir)  # once more: nothing added
    assert len(read_results(tmp_path / "runs.csv")) == 1


def test_killed_before_metrics_json_then_resumed_in_its_run_dir_records_once(tiny_cfg, tmp_path: Path,
                                                                             monkeypatch) -> None:
    real = pipeline.write_json_atomic

    def die_at_metrics(path, obj):
        if Path(path).name == "metrics.json":
            raise KeyboardInterrupt("before metrics.json")
        real(path, obj)

    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(pipeline, "write_json_atomic", die_at_metrics)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(tiny_cfg("method=l1"), run_dir)
    record = pipeline.run(tiny_cfg("method=l1", "resume=true"), run_dir)
    assert [r["timestamp"] for r in read_results(tmp_path / "runs.csv")] == [record["timestamp"]]


def test_a_finished_run_dir_without_its_row_names_the_record_command(tiny_cfg, tmp_path: Path,
                                                                     monkeypatch) -> None:
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        killed_after(m, "after metrics.json", append=False)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(tiny_cfg("method=l1"), run_dir)
    with pytest.raises(UserError, match="already holds a finished run") as err:
        pipeline.run(tiny_cfg("method=l1", "seed=1"), run_dir)  # another config, same dir: refused
    command = str(err.value).split("add it with ")[1].split()
    assert command[:3] == ["python", "-m", "prunelab.record"]
    assert record_main(command[3:]) == 0 and len(read_results(tmp_path / "runs.csv")) == 1
    with pytest.raises(UserError) as again:  # now recorded: the refusal no longer suggests recording it
        pipeline.run(tiny_cfg("method=l1", "seed=1"), run_dir)
    assert "prunelab.record" not in str(again.value)


# --- the command line: Ctrl-C, a resumed finished config ------------------------------------


def run_py(tmp_path: Path, *args: str, before: str = "") -> subprocess.CompletedProcess:
    """run.py with the tiny settings in a fresh process; `before`: Python run first (to simulate a fault)."""
    where = [f"results.csv={tmp_path}/runs.csv", f"paths.baselines={tmp_path}/b", f"paths.checkpoints={tmp_path}/c"]
    code = (f"import runpy, sys\n{before}\nsys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, "run.py", *TINY, "method=l1", *where, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


CTRL_C_IN_TRAINING = """
from prunelab import pipeline
def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
pipeline.fit = interrupted
"""


def test_ctrl_c_ends_with_one_line_saying_how_to_resume(tmp_path: Path) -> None:
    done = run_py(tmp_path, f"hydra.run.dir={tmp_path}/run", before=CTRL_C_IN_TRAINING)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith("interrupted: resume with") and line.endswith("resume=true")
    resumed = subprocess.run(shlex.split(line.split(": ", 2)[2]), cwd=REPO, capture_output=True, text=True,
                             timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert resumed.returncode == 0, resumed.stderr
    assert len(read_results(tmp_path / "runs.csv")) == 1


def test_resuming_a_finished_config_leaves_no_empty_run_dir(tmp_path: Path) -> None:
    assert run_py(tmp_path, f"hydra.run.dir={tmp_path}/first").returncode == 0
    done = run_py(tmp_path, f"hydra.run.dir={tmp_path}/again", "resume=true")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "again").exists() and (tmp_path / "first" / "metrics.json").is_file()
    assert len(read_results(tmp_path / "runs.csv")) == 1


# --- the dense baseline cache follows the data, not its tag ----------------------------------


def write_cifar10(root: Path, labels_seed: int) -> None:
    """A 6-file CIFAR-10 folder of 4 rows per file: the same images every time, labels drawn from `labels_seed`."""
    images = np.random.default_rng(0).integers(0, 256, (6, 4, 3072), dtype=np.uint8)
    labels = np.random.default_rng(labels_seed).integers(0, 10, (6, 4))
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    (root / "cifar-10-batches-py").mkdir(parents=True)
    for name, data, y in zip(names, images, labels):
        batch = {b"data": data, b"labels": y.tolist()}
        (root / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(batch))


def baseline_key(tiny_cfg, root: Path) -> tuple[str, str]:
    """(data tag, baseline cache key) of the CIFAR-10 folder at `root`."""
    cfg = tiny_cfg("dataset=cifar10", f"dataset.root={root}", "device=cpu", tiny=False)
    data = build_dataset(dataset_config(cfg, cfg.dataset), torch.device("cpu"))
    return data.tag, cache_key(cfg, data)


def test_a_same_size_dataset_with_other_labels_gets_another_baseline(tiny_cfg, tmp_path: Path) -> None:
    write_cifar10(tmp_path / "old", labels_seed=1)
    write_cifar10(tmp_path / "new", labels_seed=2)  # same images, same sizes, other labels
    shutil.copytree(tmp_path / "old", tmp_path / "copy")  # the same data somewhere else
    (old_tag, old), (new_tag, new), (_, copy) = (baseline_key(tiny_cfg, tmp_path / d) for d in ("old", "new", "copy"))
    assert old_tag == new_tag == "cifar10[20/4]"
    assert old != new and old == copy


def test_image_folders_moved_between_classes_get_another_fingerprint(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (10, 10), (i, 0, 0)).save(tmp_path / split / label / f"{label}{i}.png")
    cfg = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "dataset" / "imagenet.yaml"),
                          {"root": str(tmp_path), "num_classes": 2, "input_size": 8, "resize": 9, "num_workers": 0})
    before = build_dataset(cfg, torch.device("cpu")).fingerprint
    assert build_dataset(cfg, torch.device("cpu")).fingerprint == before
    (tmp_path / "train" / "cat" / "cat0.png").rename(tmp_path / "train" / "dog" / "cat0.png")  # relabelled
    assert build_dataset(cfg, torch.device("cpu")).fingerprint != before


# --- read-only folders and a full disk --------------------------------------------------------


def deny_writes_in(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """`os.access` says `folder` is read-only (as chmod would for a user other than root)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == folder.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("key", ["paths.checkpoints", "paths.baselines", "hydra.run.dir"])
def test_a_read_only_folder_is_one_line_before_training(tiny_cfg, tmp_path: Path, monkeypatch, key: str) -> None:
    (tmp_path / "ro").mkdir()
    run_dir = tmp_path / "ro" / "run" if key == "hydra.run.dir" else tmp_path / "run"
    overrides = [] if key == "hydra.run.dir" else [f"{key}={tmp_path}/ro/{key}"]
    deny_writes_in(monkeypatch, tmp_path / "ro")
    trained = []
    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: trained.append(1))
    with pytest.raises(UserError, match=rf"^{key}=.*: .*/ro is not a writable folder: make it writable or set {key}"):
        pipeline.run(tiny_cfg("method=l1", *overrides), run_dir)
    assert not trained and not (tmp_path / "runs.csv").exists()


def test_a_full_disk_mid_run_is_one_line_and_resume_goes_on(tiny_cfg, tmp_path: Path, monkeypatch) -> None:
    real_fdopen = os.fdopen
    opened = []

    def fdopen_on_a_full_disk(*args, **kwargs):  # checkpoints are written through os.fdopen: the third one fails
        opened.append(1)
        f = real_fdopen(*args, **kwargs)
        return DiskFull(f, 100) if len(opened) > 2 else f

    with monkeypatch.context() as m:
        m.setattr(os, "fdopen", fdopen_on_a_full_disk)
        with pytest.raises(UserError) as err:
            pipeline.run(tiny_cfg("method=l1"), tmp_path / "a")
    message = str(err.value)
    assert message.startswith(f"cannot write {tmp_path}/") and "(No space left on device): free space on its disk" in message
    assert "set paths." in message and message.endswith("resume=true (it goes on from the last saved epoch)")
    assert "\n" not in message and not (tmp_path / "runs.csv").exists()
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind
    pipeline.run(tiny_cfg("method=l1", "resume=true"), tmp_path / "b")
    assert len(read_results(tmp_path / "runs.csv")) == 1


def test_a_failed_json_write_names_its_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "metrics.json"
    real_open = pathlib.Path.open
    monkeypatch.setattr(pathlib.Path, "open",
                        lambda self, mode="r", *a, **k: DiskFull(real_open(self, mode, *a, **k), 3) if "x" in mode
                        else real_open(self, mode, *a, **k))
    with pytest.raises(OSError) as err:
        pipeline.write_json_atomic(target, {"acc": 1.0})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_run_in_a_read_only_folder_names_out(tiny_cfg, tmp_path: Path, monkeypatch, capsys) -> None:
    from prunelab.export import main as export_main

    pipeline.run(tiny_cfg("method=l1"), tmp_path / "run")
    deny_writes_in(monkeypatch, tmp_path / "run")
    assert export_main([str(tmp_path / "run"), "--format", "torchscript", "--repeats", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give a path in a folder you can write to" in err, err
    (tmp_path / "elsewhere").mkdir()
    out = tmp_path / "elsewhere" / "model.ts"
    assert export_main([str(tmp_path / "run"), "--format", "torchscript", "--repeats", "1", "--out", str(out)]) == 0
    assert out.is_file()


# --- messages that say what happened and what to do ------------------------------------------


class ShellOnLoad:
    """Pickles as a call of os.system: loading it unsafely would create the file `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.path))}",))


def test_an_unsafe_checkpoint_names_the_refused_call(tmp_path: Path) -> None:
    from prunelab.train import checkpoint as ckpt

    marker = tmp_path / "ran"
    torch.save({"model": ShellOnLoad(marker)}, tmp_path / "crafted.pt")
    with pytest.raises(UserError) as err:
        ckpt.load(tmp_path / "crafted.pt")
    message = str(err.value)
    assert "loading it would call posix.system" in message and "nothing was run" in message
    assert message.endswith("give a .pt file written by prunelab or torch.save") and "weights_only" not in message
    assert not marker.exists()


def test_a_corrupt_stage_checkpoint_under_resume_says_delete_it(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg("method=l1")
    pipeline.run(cfg, tmp_path / "a")
    folder = Path(cfg.paths.checkpoints) / pipeline.run_key(cfg)
    (folder / "finetune.pt").write_bytes(b"not a checkpoint")
    (folder / "recorded.json").unlink()  # as if the job had been killed while training
    with pytest.raises(UserError, match=r"resume: .*finetune\.pt cannot be read .*; delete it \(the stage starts "
                                        r"over\) or run with resume=false$"):
        pipeline.run(tiny_cfg("method=l1", "resume=true"), tmp_path / "b")


def test_a_cifar10_label_out_of_range_says_the_file_is_not_cifar10(tiny_cfg, tmp_path: Path) -> None:
    write_cifar10(tmp_path, labels_seed=1)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    raw = pickle.loads(batch.read_bytes())
    raw[b"labels"][1] = 99
    batch.write_bytes(pickle.dumps(raw))
    with pytest.raises(UserError) as err:
        baseline_key(tiny_cfg, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{batch} has the label 99, outside the 10 classes (0-9) of CIFAR-10")
    assert "not a CIFAR-10 batch" in message and "num_classes" not in message


def test_timm_weights_offline_fail_at_once(monkeypatch, tmp_path: Path) -> None:
    import timm
    from huggingface_hub import constants

    from prunelab.models import hub

    calls = []
    real_create = timm.create_model

    def create(*args, **kwargs):
        calls.append(constants.HF_HUB_OFFLINE)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(timm, "create_model", create)
    monkeypatch.setattr(hub, "_reachable", lambda url: False)
    with pytest.raises(UserError, match=r"model.pretrained=true: the weights of 'resnet18' are not in the Hugging "
                                        r"Face cache .* cannot be reached \(offline\)"):
        hub.build_hub("resnet18", 10, pretrained=True, source="timm")
    assert calls == [True] and constants.HF_HUB_OFFLINE is False  # only the cache was asked; offline mode restored
