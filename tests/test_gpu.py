"""The CUDA code path (bf16 autocast, channels_last, device-side augmentation, compile); skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunelab import pipeline

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("compile_model", [False, True])
def test_cuda_run_with_bf16_channels_last(tiny_cfg, tmp_path: Path, compile_model: bool) -> None:
    cfg = tiny_cfg("device=cuda", "method=l1", "trainer.amp=bf16", "trainer.channels_last=true",
                   f"trainer.compile={str(compile_model).lower()}", "trainer.epochs=2")
    record = pipeline.run(cfg, tmp_path / "run")
    assert record["device"].startswith("cuda") and 0 <= record["acc_final"] <= 100


def test_lrpet_projection_runs_on_the_device(tiny_cfg, tmp_path: Path) -> None:
    record = pipeline.run(tiny_cfg("device=cuda", "method=lrpet", "trainer.epochs=2"), tmp_path / "run")
    assert record["extra"]["projections"] == 2
