"""Records that are never lost, torn, doubled or mixed; bad input as one line with exit 2; safe loading."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from omegaconf import OmegaConf
from torch import nn

from conftest import REPO, TINY
from prunelab import pipeline
from prunelab.data.cifar import read_batch
from prunelab.errors import UserError
from prunelab.record import read_results
from prunelab.train import checkpoint as ckpt
from prunelab.train.baseline import _locked
from prunelab.train.loop import TrainingDiverged, _check_finite


def cli(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def tiny_run(tmp_path: Path, *overrides: str) -> list[str]:
    return [str(REPO / "run.py"), *TINY, f"results.csv={tmp_path}/runs.csv", f"paths.baselines={tmp_path}/b",
            f"paths.checkpoints={tmp_path}/c", *overrides]


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path: Path) -> None:
    jobs = [subprocess.Popen([sys.executable, *tiny_run(tmp_path, f"seed={s}")], cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(REPO / "src")}) for s in range(4)]
    assert all(job.wait(timeout=300) == 0 for job in jobs), [job.stderr.read() for job in jobs]
    rows = read_results(tmp_path / "runs.csv")
    assert sorted(r["seed"] for r in rows) == [0, 1, 2, 3] and len({r["run_dir"] for r in rows}) == 4
    for row in rows:  # every row points at its own job's files
        metrics = json.loads((tmp_path / row["run_dir"] / "metrics.json").read_text())
        assert (metrics["seed"], metrics["timestamp"]) == (row["seed"], row["timestamp"])


def test_a_finished_run_directory_is_not_reused(tiny_cfg, tmp_path: Path) -> None:
    pipeline.run(tiny_cfg("method=l1"), tmp_path / "run")
    with pytest.raises(UserError, match="already holds a finished run"):
        pipeline.run(tiny_cfg("method=l1", "seed=1"), tmp_path / "run")
    assert len(read_results(tmp_path / "runs.csv")) == 1


def test_resuming_a_finished_run_records_it_once(tiny_cfg, tmp_path: Path) -> None:
    first = pipeline.run(tiny_cfg("method=l1"), tmp_path / "a")
    again = pipeline.run(tiny_cfg("method=l1", "resume=true"), tmp_path / "b")  # e.g. a SLURM requeue
    assert again == first and len(read_results(tmp_path / "runs.csv")) == 1 and not (tmp_path / "b").exists()
    (tmp_path / "runs.csv").unlink()  # the row got lost: resuming adds it back from the run's metrics.json
    pipeline.run(tiny_cfg("method=l1", "resume=true"), tmp_path / "c")
    assert [r["timestamp"] for r in read_results(tmp_path / "runs.csv")] == [first["timestamp"]]


def test_non_finite_weights_or_statistics_stop_the_run() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    _check_finite(model, "finetune", 0)
    model[1].running_var[2] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"1.running_var holds NaN or inf after epoch 3"):
        _check_finite(model, "finetune", 2)


def test_the_results_csv_is_checked_before_training(tiny_cfg, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is not a writable folder"):
        pipeline.run(tiny_cfg("method=l1", f"results.csv={tmp_path}/afile/runs.csv"), tmp_path / "a")
    stale = tmp_path / "stale.csv"
    stale.write_text("method,acc\n")
    trained = []
    monkeypatch.setattr(pipeline, "dense_baseline", lambda *args, **kwargs: trained.append("baseline"))
    monkeypatch.setattr(pipeline, "fit", lambda *args, **kwargs: trained.append("stage"))
    with pytest.raises(UserError, match="header does not match"):
        pipeline.run(tiny_cfg("method=l1", f"results.csv={stale}"), tmp_path / "b")
    assert trained == [] and not (tmp_path / "b").exists()  # refused before any training


def test_a_failed_append_says_how_to_record_without_retraining(tiny_cfg, tmp_path: Path, monkeypatch) -> None:
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "append_row", full_disk)
    with pytest.raises(UserError, match=r"python -m prunelab.record .*metrics.json --csv") as err:
        pipeline.run(tiny_cfg("method=l1"), tmp_path / "run")
    monkeypatch.undo()
    words = str(err.value).split("add it with ")[1].split()
    done = cli(REPO, "-m", "prunelab.record", *words[3:])
    assert done.returncode == 0, done.stderr
    assert len(read_results(tmp_path / "runs.csv")) == 1


def test_a_sweep_with_failed_jobs_exits_2_and_lists_them(tmp_path: Path) -> None:
    script, *overrides = tiny_run(tmp_path, "method.ratio=0.5,1.5", f"hydra.sweep.dir={tmp_path}/sweep")
    done = cli(tmp_path, script, "-m", *overrides)
    assert done.returncode == 2
    assert "1 job(s) of the sweep failed" in done.stderr and "method.ratio=1.5 must be in [0, 1)" in done.stderr
    assert len(read_results(tmp_path / "runs.csv")) == 1


def test_the_report_refuses_to_write_without_results(tmp_path: Path) -> None:
    from prunelab.report.__main__ import main

    (tmp_path / "results").mkdir()
    assert main(["--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_wandb_online_is_bounded(monkeypatch, tmp_path: Path) -> None:
    wandb = pytest.importorskip("wandb")
    from prunelab.record.wandb_mirror import open_mirror

    seen = {}

    def init(**kwargs):
        seen.update(kwargs)
        raise TimeoutError("no network")

    monkeypatch.setattr(wandb, "init", init)
    mirror = open_mirror({"name": "wandb", "mode": "online", "timeout_s": 7}, tmp_path, {}, "run")
    assert seen["settings"].init_timeout == 7 and type(mirror).__name__ == "Mirror"


def test_checkpoints_are_readable_by_others_and_the_lock_wait_is_logged(tmp_path: Path, caplog) -> None:
    old = os.umask(0o022)
    try:
        ckpt.save_atomic(tmp_path / "x.pt", {"model": {}})
    finally:
        os.umask(old)
    assert (tmp_path / "x.pt").stat().st_mode & 0o777 == 0o644
    held = FileLock(str(tmp_path / ".lock"))
    held.acquire()
    caplog.set_level(logging.INFO)

    def wait() -> None:
        with _locked(tmp_path / ".lock"):
            pass

    waiter = threading.Thread(target=wait)
    waiter.start()
    for _ in range(6000):  # release only once the waiter has found the lock held (however busy the machine)
        if "another job is training this dense baseline" in caplog.text:
            break
        time.sleep(0.01)
    held.release()
    waiter.join(timeout=10)
    assert "another job is training this dense baseline" in caplog.text


@pytest.mark.parametrize(("args", "message"), [
    (["method.ratio=abc"], "error: method.ratio=abc is not a number: give a number in [0, 1)"),
    (["seed=abc"], "error: seed=abc is not an integer"),
    (["device=tpu"], "error: unknown device 'tpu': choose one of auto, cpu, cuda"),
    (["nosuchkey=1"], "error: Could not override 'nosuchkey'"),
    (["baseline.checkpoint=EMPTY"], "cannot be read (EOFError"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    args = [a.replace("EMPTY", str(tmp_path / "empty.pt")) for a in args]
    done = cli(tmp_path, *tiny_run(tmp_path, *args))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert lines and message in lines[0], done.stderr
    assert not (tmp_path / "runs.csv").exists()


def test_cuda_without_a_gpu_is_bad_input(tiny_cfg, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="device=cuda but this machine has no usable CUDA device"):
        pipeline.run(tiny_cfg("method=l1", "device=cuda"), tmp_path / "run")


def test_profile_help_and_its_config_errors() -> None:
    done = cli(REPO, "-m", "prunelab.profile", "--help")
    assert done.returncode == 0 and "Cost of a configuration" in done.stdout
    done = cli(REPO, "-m", "prunelab.profile", "model=nosuch")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "nosuch" in done.stderr
    done = cli(REPO, "-m", "prunelab.profile", "method=l1", "method.ratio=abc")
    assert done.returncode == 2 and "method.ratio=abc is not a number" in done.stderr


def test_more_classes_than_labels_warns(tiny_cfg, tmp_path: Path, caplog) -> None:
    from prunelab.config import dataset_config
    from prunelab.data import build_dataset

    caplog.set_level(logging.WARNING)
    cfg = tiny_cfg("dataset=digits", "dataset.num_classes=12", tiny=False)
    build_dataset(dataset_config(cfg, cfg.dataset), torch.device("cpu"))
    assert "dataset.num_classes=12 but digits has labels only up to 9" in caplog.text


class Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_crafted_cifar_pickle_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": Payload(str(marker)), "labels": [0]}))
    with pytest.raises(UserError, match="not a readable pickle .*pathlib"):
        read_batch(tmp_path / "data_batch_1", "labels")
    assert not marker.exists()


def test_pretrained_torchvision_weights_load_tensors_only(monkeypatch) -> None:
    import torchvision
    from torchvision.models._api import WeightsEnum

    from prunelab.models.hub import build_hub

    seen = {}

    def fake(self, *args, **kwargs):
        seen.update(kwargs)
        return torchvision.models.resnet18().state_dict()

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake)
    build_hub("resnet18", 10, pretrained=True, source="torchvision")
    assert seen.get("weights_only") is True


# ---------------------------------------------------------------- fidelity to the official code


def test_vgg_convs_before_a_pool_are_scored_on_the_pooled_map() -> None:
    from prunelab.models import build_model
    from prunelab.surgery import channel_groups

    model = build_model(OmegaConf.load(REPO / "conf" / "model" / "vgg16.yaml"), 10)
    pooled = {m.conv: m.pooled for g in channel_groups(model, (3, 32, 32)) for m in g.members if m.pooled}
    assert pooled == {"features.conv1": "features.pool2", "features.conv4": "features.pool5",
                      "features.conv8": "features.pool9", "features.conv12": "features.pool13"}


@pytest.mark.parametrize(("ties", "kept"), [("high_index", [1, 2]), ("low_index", [0, 1])])
def test_ties_keep_the_higher_or_the_lower_index(ties: str, kept: list[int]) -> None:
    from prunelab.methods.channel import top_k

    assert top_k(torch.tensor([3.0, 3.0, 3.0, 1.0]), 2, ties).tolist() == kept
    assert top_k(torch.tensor([0.5, 2.0, 1.0]), 2, ties).tolist() == [1, 2]  # without ties both agree


def test_numpy_ties_keep_what_numpys_default_argsort_keeps_beyond_16_channels() -> None:
    import numpy as np

    from prunelab.methods.channel import top_k

    rng = np.random.default_rng(0)
    differ = 0
    for _ in range(20):  # HRank-like scores: few distinct values over 64 channels, so ties straddle the cut
        ranks = rng.integers(0, 4, 64).astype(np.float32)
        official = set(np.argsort(ranks)[64 - 24:].tolist())
        assert set(top_k(torch.from_numpy(ranks), 24, "numpy").tolist()) == official
        differ += official != set(top_k(torch.from_numpy(ranks), 24, "high_index").tolist())
    assert differ > 0, "numpy's sort kept the stable order on every tie: high_index and numpy would agree"
    assert top_k(torch.tensor([0.5, 2.0, 1.0]), 2, "numpy").tolist() == [1, 2]  # without ties all agree


def test_a_run_with_numpy_ties_names_the_numpy_build(tiny_cfg, tmp_path: Path) -> None:
    import numpy as np

    record = pipeline.run(tiny_cfg("method=hrank", "method.ties=numpy", "method.scoring.images=16"), tmp_path / "run")
    assert record["extra"]["ties"] == f"numpy {np.__version__}"


def test_reinit_after_pruning_resets_all_but_the_kept_conv_weights(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from prunelab.config import compose_config
    from prunelab.methods.base import Context, build_method
    from prunelab.models import build_model

    torch.manual_seed(0)
    dense = build_model({"arch": "cifar_vgg", "name": "vgg", "cfg": [8, "M", 16, 16], "classifier_hidden": [16],
                         "conv_bias": True, "final_pool": "avg"}, 10)
    for m in dense.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.running_var.uniform_(0.5, 1.5)
    ctx = Context(SimpleNamespace(input_shape=(3, 8, 8)), torch.device("cpu"), 0)
    for reinit in (False, True):
        method = build_method(compose_config(["method=l1", "method.ratio=0.5",
                                              f"method.reinit_after_pruning={reinit}"]).method)
        pruned = method.prepare(copy_of(dense), ctx)
        bn = pruned.features.norm0
        fresh = bool((bn.weight == 1).all() and (bn.running_var == 1).all())
        assert fresh == reinit
        classifier_same = torch.equal(pruned.classifier[-1].weight, dense.classifier[-1].weight)
        assert classifier_same != reinit
        kept = pruned.features.conv0.weight  # copied in both cases
        assert any(torch.equal(kept[0], w) for w in dense.features.conv0.weight)


def copy_of(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def test_faithful_recipes_train_in_float32_and_bf16_is_recorded() -> None:
    from prunelab.pipeline import recipe_label
    from prunelab.train.stage import Stage

    for name in ("hrankplus_finetune", "hrankplus_imagenet", "lrpet_cifar", "lrpet_imagenet"):
        assert OmegaConf.load(REPO / "conf" / "trainer" / f"{name}.yaml").amp == "none"
    stage = Stage("finetune", {"name": "hrankplus_finetune", "amp": "bf16"})
    assert recipe_label([stage], torch.device("cuda")) == "hrankplus_finetune@bf16"
    assert recipe_label([stage], torch.device("cpu")) == "hrankplus_finetune"  # autocast is off on the CPU


def test_tables_can_compare_nominal_counts_like_the_lrpet_readme(tmp_path: Path) -> None:
    import csv as csvlib

    from prunelab.record.schema import RESULT_FIELDS
    from prunelab.report import load_paper_numbers, load_results, summarize
    from prunelab.report.spec import TableSpec

    row = {f: "" for f in RESULT_FIELDS}
    row.update(method="lrpet", model="resnet56", dataset="cifar10", seed="0", target="g=0.57", base_params="853018",
               base_params_no_bn="848954", base_macs="125485696", params="300000", params_no_bn="297000",
               macs="50000000", params_reduction="0.6", macs_reduction="0.6", acc_final="90", acc_best="90",
               epochs_baseline="1", epochs_finetune="1", train_time_s="1", device="cpu", git_sha="a" * 40,
               command="python run.py", run_dir="outputs/run", experiment="x", recipe="r", data="d",
               timestamp="2026-01-01T00:00:00Z", extra=json.dumps({"nominal_macs": 56060000, "nominal_params_no_bn": 390000}))
    with (tmp_path / "runs.csv").open("w", newline="") as f:
        writer = csvlib.DictWriter(f, fieldnames=list(RESULT_FIELDS))
        writer.writeheader()
        writer.writerow(row)
    runs = load_results([tmp_path / "runs.csv"])
    paper = load_paper_numbers(REPO / "results" / "paper_numbers.csv")
    export = summarize(runs, TableSpec(name="t", title="t", params="params_no_bn"), paper).iloc[0]
    nominal = summarize(runs, TableSpec(name="t", title="t", params="params_no_bn", counts="nominal"), paper).iloc[0]
    assert (export["macs"], export["params"]) == (50_000_000, 297_000)
    assert (nominal["macs"], nominal["params"]) == (56_060_000, 390_000)
    assert nominal["macs_red"] == pytest.approx(100 * (1 - 56_060_000 / 125_485_696))
