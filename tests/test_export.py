"""Deployment export: the deploy form written as ONNX or TorchScript computes the run's logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from prunelab import pipeline
from prunelab.errors import UserError
from prunelab.export import export


@pytest.mark.parametrize("method", [["method=l1"], ["method=lrpet", "trainer=smoke"],
                                    ["method=cst", "method.min_templates=2", "method.ramp_epochs=0"]])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_exported_model_computes_the_runs_logits(tiny_cfg, tmp_path: Path, method: list[str], fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    pipeline.run(tiny_cfg(*method), tmp_path / "run")
    out = export(tmp_path / "run", fmt, batch=2, repeats=2)
    assert Path(out["file"]).is_file() and out["max_abs_diff"] < 1e-4
    assert out["pytorch_ms"] > 0 and out["exported_ms"] > 0


def test_the_command_line_prints_one_json_line(tiny_cfg, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pipeline.run(tiny_cfg("method=l1"), tmp_path / "run")
    done = subprocess.run([sys.executable, "-m", "prunelab.export", str(tmp_path / "run"), "--repeats", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["format"] == "onnx"
    with pytest.raises(UserError, match="does not exist"):
        export(tmp_path / "nothing")


def test_a_pruned_hub_model_round_trips_through_onnx(tiny_cfg, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    cfg = tiny_cfg("dataset=synthetic", "dataset.num_train=32", "dataset.num_test=16", "dataset.image_size=32",
                   "model=hub", "model.name=resnet18", "model.source=torchvision", "method=l1", "method.ratio=0.5",
                   "trainer=smoke", "device=cpu", "measure.latency=false", tiny=False)
    pipeline.run(cfg, tmp_path / "run")
    out = export(tmp_path / "run", "onnx", batch=2, repeats=2)
    assert out["max_abs_diff"] < 1e-4
