"""The whole run: record contract, shared baselines, checkpoints, resume, bad input, profiler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunelab import pipeline
from prunelab.errors import UserError
from prunelab.profile import profile
from prunelab.record import RESULT_FIELDS, read_results
from prunelab.train import checkpoint as ckpt

from conftest import REPO, TINY, compose_config


def test_run_records_every_contract_key(tiny_cfg, tmp_path: Path) -> None:
    record = pipeline.run(tiny_cfg("method=l1", "method.ratio=0.5"), tmp_path / "run", "python run.py method=l1")
    assert tuple(record) == RESULT_FIELDS
    assert record["method"] == "l1" and record["target"] == "ratio=0.5" and record["params"] < record["base_params"]
    assert 0 < record["macs_reduction"] < 1 and record["epochs_finetune"] == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == json.loads(json.dumps(record))
    rows = read_results(tmp_path / "runs.csv")
    assert len(rows) == 1 and rows[0]["acc_final"] == record["acc_final"]
    assert "finetune,1," in (tmp_path / "run" / "history.csv").read_text()
    assert ckpt.load_model(tmp_path / "run" / "model.pt").spec.mids[0] == 2  # half of 4 filters kept


@pytest.mark.parametrize("method", ["l1", "lrpet"])
def test_the_final_model_reloads_from_model_pt(tiny_cfg, tmp_path: Path, method: str) -> None:
    from prunelab.data import build_dataset
    from prunelab.measure.accuracy import top1

    cfg = tiny_cfg(f"method={method}", "trainer.limit_eval_batches=null")
    record = pipeline.run(cfg, tmp_path / "run")
    model = ckpt.load_model(tmp_path / "run" / "model.pt")
    data = build_dataset(cfg.dataset, torch.device("cpu"))
    assert top1(model, data.loader("test", 64, train=False), torch.device("cpu")) == record["acc_final"]
    if method == "lrpet":
        assert record["acc_compressed"] is None and json.loads(json.dumps(record["extra"]))["bn_rectify"] is True


def test_sweep_points_share_one_cached_baseline(tiny_cfg, tmp_path: Path, monkeypatch) -> None:
    first = pipeline.run(tiny_cfg("method=l1", "method.ratio=0.3"), tmp_path / "a")
    trained = []
    monkeypatch.setattr("prunelab.train.baseline.fit", lambda *a, **k: trained.append(1))
    second = pipeline.run(tiny_cfg("method=random", "method.ratio=0.5"), tmp_path / "b")
    assert not trained and first["base_acc"] == second["base_acc"]
    entries = list((tmp_path / "baselines").iterdir())
    assert len(entries) == 1 and (entries[0] / "dense.pt").is_file()
    monkeypatch.undo()  # another seed is another baseline
    pipeline.run(tiny_cfg("method=dense", "seed=1"), tmp_path / "c")
    assert len(list((tmp_path / "baselines").iterdir())) == 2


def test_baseline_checkpoint_is_loaded_and_bad_files_are_named(tiny_cfg, tmp_path: Path) -> None:
    pipeline.run(tiny_cfg("method=dense"), tmp_path / "a")
    dense = next((tmp_path / "baselines").iterdir()) / "dense.pt"
    other = tmp_path / "other"
    record = pipeline.run(tiny_cfg("method=dense", f"baseline.checkpoint={dense}", f"paths.baselines={other}"),
                          tmp_path / "b")
    assert record["base_acc"] == ckpt.load(dense)["acc"] and not other.exists()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=f"baseline.checkpoint: {garbage} cannot be read"):
        pipeline.run(tiny_cfg("method=dense", f"baseline.checkpoint={garbage}"), tmp_path / "c")
    with pytest.raises(UserError, match="does not fit this model"):
        pipeline.run(tiny_cfg("method=dense", f"baseline.checkpoint={dense}", "model.widths=[8,16,32]"), tmp_path / "d")
    assert len(read_results(tmp_path / "runs.csv")) == 2  # the failures left no row


def test_resume_equals_uninterrupted_run(tiny_cfg, tmp_path: Path, monkeypatch) -> None:
    settings = ["method=l1", "trainer.epochs=3", f"paths.baselines={tmp_path}/shared"]
    whole = pipeline.run(tiny_cfg(*settings, f"paths.checkpoints={tmp_path}/c1"), tmp_path / "whole")

    real_save, saves = ckpt.save_atomic, []

    def killed_after_two_epochs(path, payload):
        if payload.get("phase") == "finetune" and len(saves) == 2:
            raise KeyboardInterrupt  # the job is killed while epoch 3 ends
        saves.append(path)
        real_save(path, payload)

    monkeypatch.setattr(ckpt, "save_atomic", killed_after_two_epochs)
    interrupted = tiny_cfg(*settings, f"paths.checkpoints={tmp_path}/c2")
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(interrupted, tmp_path / "killed")
    monkeypatch.setattr(ckpt, "save_atomic", real_save)
    interrupted.resume = True
    resumed = pipeline.run(interrupted, tmp_path / "resumed")
    for key in ("acc_final", "acc_best", "acc_compressed", "params", "macs", "epochs_finetune"):
        assert resumed[key] == whole[key], key
    a = ckpt.load(tmp_path / "whole" / "model.pt")["model"]
    b = ckpt.load(tmp_path / "resumed" / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = (tmp_path / "resumed" / "history.csv").read_text().splitlines()
    assert history == (tmp_path / "whole" / "history.csv").read_text().splitlines()[:1] + history[1:]
    assert [line.split(",")[:2] for line in history[1:]] == [["finetune", "1"], ["finetune", "2"], ["finetune", "3"]]


def test_resume_refuses_a_checkpoint_of_another_config(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg("method=l1")
    pipeline.run(cfg, tmp_path / "a")
    path = Path(cfg.paths.checkpoints) / pipeline.run_key(cfg) / "finetune.pt"
    payload = ckpt.load(path)
    payload["fingerprint"] = "something else"
    ckpt.save_atomic(path, payload)
    (path.parent / "recorded.json").unlink()  # as if the run had been killed before its record
    cfg.resume = True
    with pytest.raises(UserError, match="different configuration"):
        pipeline.run(cfg, tmp_path / "b")


def test_skip_baseline_is_only_for_methods_trained_from_scratch(tiny_cfg, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="baseline.skip=true"):
        pipeline.run(tiny_cfg("method=l1", "baseline.skip=true"), tmp_path / "a")


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    where = [f"results.csv={tmp_path}/runs.csv", f"paths.baselines={tmp_path}/b", f"paths.checkpoints={tmp_path}/c",
             f"hydra.run.dir={tmp_path}/run"]
    own_data = any(o.startswith("dataset=") for o in overrides)
    tiny = [o for o in TINY if not (own_data and o.startswith("dataset"))]
    return subprocess.run([sys.executable, "run.py", *tiny, *where, *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.ratio=1.5"], "error: method.ratio=1.5 must be in [0, 1)"),
        (["method.compress_rate=[0.1,0.2]"], "error: method.compress_rate has 2 rates but this model takes 12"),
        (["trainer.lr=1e30"], "the training loss became"),
        (["dataset=cifar10", "dataset.root=/nonexistent", "dataset.download=false"],
         "error: cifar10 not found: looked for"),
        (["baseline.checkpoint=/nonexistent.pt"], "error: baseline.checkpoint: /nonexistent.pt does not exist"),
    ],
)
def test_bad_input_is_one_line_nonzero_exit_and_no_row(tmp_path: Path, overrides: list[str], message: str) -> None:
    done = run_cli(tmp_path, *overrides)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs.csv").exists()


def test_unknown_names_list_the_valid_ones(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "method=nosuch")
    assert done.returncode != 0 and "nosuch" in done.stderr and "l1" in done.stderr and "random" in done.stderr
    assert not (tmp_path / "runs.csv").exists()
    done = run_cli(tmp_path, "method.criterion=nosuch")
    assert done.returncode == 2 and "unknown method.criterion 'nosuch': choose one of" in done.stderr


def test_profile_prints_one_json_line() -> None:
    done = subprocess.run([sys.executable, "-m", "prunelab.profile", "model=resnet56", "method=l1", "method.ratio=0.5"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip())
    assert set(out) == {"params", "params_no_bn", "macs", "base_params", "base_params_no_bn", "base_macs",
                        "params_reduction", "params_no_bn_reduction", "macs_reduction"}
    assert (out["base_macs"], out["base_params"]) == (125_485_696, 853_018) and out["macs"] < out["base_macs"]


def test_profile_on_imagenet_shapes_uses_224_pixels_and_1000_classes() -> None:
    out = profile(compose_config(["model=hub", "model.name=resnet18", "dataset=imagenet", "method=dense"]))
    assert out["base_macs"] == out["macs"] == 1_814_073_344  # torchvision ResNet-18 at 224 px, 1000 classes
    assert out["base_params"] == 11_689_512


def test_a_multirun_over_two_experiments_records_one_row_per_job(tmp_path: Path) -> None:
    tiny = [o for o in TINY if not o.startswith("model")] + ["dataset.image_size=32"]
    where = [f"results.csv={tmp_path}/runs.csv", f"paths.baselines={tmp_path}/b", f"paths.checkpoints={tmp_path}/c",
             f"hydra.sweep.dir={tmp_path}/multi"]
    done = subprocess.run([sys.executable, "run.py", "-m", "experiment=quickstart,lrpet_ablation", *tiny, *where],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_results(tmp_path / "runs.csv")
    assert [(r["experiment"], r["method"], r["model"]) for r in rows] == [
        ("quickstart", "l1", "resnet20"), ("lrpet_ablation", "lrpet", "resnet56")]
    for row in rows:  # each row points at its own job's record and reruns just that job
        assert json.loads((Path(row["run_dir"]) / "metrics.json").read_text())["timestamp"] == row["timestamp"]
        assert f"experiment={row['experiment']}" in row["command"] and "-m" not in row["command"].split()
