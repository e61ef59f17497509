"""The CUDA code path (bf16 autocast, channels_last, device-side augmentation, compile): every method one tiny run
under debug=fast, one run compiled; skipped without a GPU.  experiments/gpu_check.py runs these tests; its CPU
rehearsal sets PRUNELAB_GPU_TEST_DEVICE=cpu, which runs them on the CPU (where bf16 and channels_last do not apply)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from prunelab import pipeline

from conftest import REPO

DEVICE = os.environ.get("PRUNELAB_GPU_TEST_DEVICE", "cuda")
METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")]


def device_run(tiny_cfg, tmp_path: Path, *overrides: str) -> dict:
    """A tiny debug=fast run on DEVICE with bf16 autocast and channels_last (widths that CST's 8 templates fit)."""
    cfg = tiny_cfg(f"device={DEVICE}", "debug=fast", "trainer.amp=bf16", "trainer.channels_last=true",
                   "dataset.val_images=16", "model.widths=[8,16,32]", *overrides)
    record = pipeline.run(cfg, tmp_path / "run")
    assert record["device"].startswith(DEVICE) and 0 <= record["acc_final"] <= 100
    if DEVICE == "cuda" and record["epochs_finetune"]:
        assert record["recipe"].endswith("@bf16")
    return record


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_with_bf16_and_channels_last(tiny_cfg, tmp_path: Path, method: str) -> None:
    device_run(tiny_cfg, tmp_path, f"method={method}")


def test_a_compiled_run(tiny_cfg, tmp_path: Path) -> None:
    record = device_run(tiny_cfg, tmp_path, "method=l1", "trainer.compile=true")
    assert record["epochs_finetune"] == 1


def test_lrpet_projection_runs_on_the_device(tiny_cfg, tmp_path: Path) -> None:
    record = device_run(tiny_cfg, tmp_path, "method=lrpet", "trainer.epochs=2")
    assert record["extra"]["projections"] == 2
