"""`python -m prunelab.evaluate RUN_DIR`: a saved run's model, rebuilt and evaluated, gives its recorded accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prunelab import pipeline
from prunelab.evaluate import evaluate_saved

from conftest import REPO, TINY


@pytest.mark.parametrize("overrides", [
    ["method=l1"],  # a width-spec model with fewer channels
    ["method=lrpet"],  # low-rank conv pairs and zero branches
    ["model=hub", "model.name=resnet18", "method=l1"],  # widths changed by Torch-Pruning
], ids=["width-spec", "low-rank", "hub"])
def test_a_saved_run_evaluates_to_its_recorded_accuracy(tiny_cfg, tmp_path: Path, overrides: list[str]) -> None:
    tiny = [o for o in TINY if not (o.startswith("model") and "model=hub" in overrides)]
    record = pipeline.run(tiny_cfg(*tiny, *overrides, "trainer.limit_eval_batches=null", tiny=False), tmp_path / "run")
    out = evaluate_saved(tmp_path / "run")
    assert out == {"acc": record["acc_final"], "split": "test", "data": record["data"], "recorded": record["acc_final"]}
    assert evaluate_saved(tmp_path / "run" / "model.pt")["acc"] == record["acc_final"]


def test_the_command_line_prints_one_json_line_and_names_bad_input(tiny_cfg, tmp_path: Path) -> None:
    record = pipeline.run(tiny_cfg("method=l1", "dataset.val_images=16"), tmp_path / "run")
    cli = [sys.executable, "-m", "prunelab.evaluate", str(tmp_path / "run")]
    done = subprocess.run([*cli, "--split=val", "device=cpu"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["split"] == "val" and out["acc"] == out["recorded"] == record["extra"]["acc_val"]
    for args, message in ((["/nonexistent"], "does not exist"), ([str(tmp_path / "run"), "--split=train"],
                                                                  "unknown option --split=train")):
        done = subprocess.run([*cli[:3], *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
