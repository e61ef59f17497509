"""Shared test helpers: compose the real Hydra config with tiny settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from prunelab.config import compose_config

REPO = Path(__file__).resolve().parents[1]

# a ResNet-20 of widths 4/8/16 on 8x8 synthetic images: a run takes about a second
TINY = [
    "dataset=synthetic", "dataset.num_train=64", "dataset.num_test=32", "dataset.image_size=8", "dataset.pad=1",
    "model=resnet20", "model.widths=[4,8,16]", "trainer=smoke", "device=cpu", "measure.latency=false",
]


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """tiny_cfg(*overrides): the composed config of a tiny run writing only under tmp_path."""

    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        where = [f"results.csv={tmp_path}/runs.csv", f"paths.baselines={tmp_path}/baselines",
                 f"paths.checkpoints={tmp_path}/checkpoints"]
        return compose_config([*(TINY if tiny else []), *where, *overrides])

    return make
