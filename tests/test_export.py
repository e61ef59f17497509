"""Deployment export: the deploy form written as ONNX, a torch.export program or TorchScript computes the run's
logits, by the current exporters, without a warning to interpret."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import REPO
from prunelab import pipeline
from prunelab.errors import UserError
from prunelab import export as exporting
from prunelab.export import FORMATS, export


@pytest.mark.parametrize("method", [["method=l1"], ["method=lrpet", "trainer=smoke"],
                                    ["method=cst", "method.min_templates=2", "method.ramp_epochs=0"]])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_the_exported_model_computes_the_runs_logits(tiny_cfg, tmp_path: Path, method: list[str], fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    pipeline.run(tiny_cfg(*method), tmp_path / "run")
    out = export(tmp_path / "run", fmt, batch=3, repeats=2)  # another batch than the one captured: it is dynamic
    assert Path(out["file"]).is_file() and out["max_abs_diff"] < 1e-4
    assert out["pytorch_ms"] > 0 and out["exported_ms"] > 0
    assert out.get("exporter", "torch.export") == "torch.export"  # ONNX: no fallback to the legacy exporter


@pytest.mark.parametrize("method", [["method=dense"], ["method=l1", "method.stage_outputs=true"]])
def test_exporting_a_resnet20_in_each_format_says_nothing_to_interpret(tiny_cfg, tmp_path: Path, capfd, caplog,
                                                                       method: list[str]) -> None:
    pytest.importorskip("onnxruntime")
    pipeline.run(tiny_cfg(*method), tmp_path / "run")  # option-A shortcuts: padded, and (pruned) gathered
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fmt in FORMATS:
            export(tmp_path / "run", fmt, batch=2, repeats=1)
    printed = capfd.readouterr()
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
    assert (printed.out, printed.err) == ("", "")


def test_the_legacy_onnx_exporter_runs_only_with_its_reason_on_one_line(tiny_cfg, tmp_path: Path, capfd,
                                                                        monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    pipeline.run(tiny_cfg("method=l1", "method.stage_outputs=true"), tmp_path / "run")

    def uncapturable(*args, **kwargs):
        raise RuntimeError("data-dependent control flow\nin forward")

    monkeypatch.setattr(exporting, "exported_program", uncapturable)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export(tmp_path / "run", "onnx", batch=2, repeats=1)
    assert out["exporter"] == "legacy" and out["max_abs_diff"] < 1e-4
    assert [str(w.message) for w in caught] == []  # no scatter in the shortcut: no "duplicated values in 'index'"
    assert out["fallback"] == "RuntimeError: data-dependent control flow in forward"
    (line,) = capfd.readouterr().err.splitlines()
    assert line.endswith("the torch.export-based ONNX exporter failed (RuntimeError: data-dependent control flow in "
                         "forward); used the legacy exporter")
    with pytest.raises(UserError, match="--format pt2: torch.export cannot capture this model .* use --format onnx"):
        export(tmp_path / "run", "pt2")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # not installed
    assert export(tmp_path / "run", "onnx", batch=2, repeats=1)["fallback"] == \
        "onnxscript is not installed (pip install onnxscript)"


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
