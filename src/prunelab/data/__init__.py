"""Datasets by name: `build_dataset(cfg.dataset, device)` (the `dataset` config group).

- cifar10, cifar100: the official python pickles, held on the device as uint8 (cifar.py)
- synthetic: a small generated dataset for tests and smoke runs (synthetic.py)
- imagenet, folder: ImageFolder trees decoded by DataLoader workers (folders.py); `folder`
  is any other tree with the same layout (e.g. a transfer target), with its own num_classes
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from prunelab.data import cifar, folders, synthetic
from prunelab.data.base import Dataset, Loader
from prunelab.errors import choose

BUILDERS: dict[str, Callable[[DictConfig, torch.device], Dataset]] = {
    "cifar10": cifar.build,
    "cifar100": cifar.build,
    "imagenet": folders.FolderDataset,
    "folder": folders.FolderDataset,
    "synthetic": synthetic.build,
}


def build_dataset(cfg: DictConfig, device: torch.device) -> Dataset:
    """The dataset named by `cfg.name`, with in-memory data already on `device`."""
    return BUILDERS[choose("dataset.name", str(cfg.name), BUILDERS)](cfg, device)


__all__ = ["BUILDERS", "Dataset", "Loader", "build_dataset"]
