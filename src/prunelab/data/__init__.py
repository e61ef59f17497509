"""Datasets by name: `build_dataset(cfg.dataset, device)` (the `dataset` config group).

- cifar10, cifar100: the official python pickles, held on the device as uint8 (cifar.py)
- mnist: the four official idx files, plain or .gz (mnist.py)
- digits: scikit-learn's bundled 8x8 handwritten digits, split by a seed (digits.py)
- synthetic: a small generated dataset for tests and smoke runs (synthetic.py)
- imagenet, folder: ImageFolder trees decoded by DataLoader workers (folders.py); `folder`
  is any other tree with the same layout (e.g. a transfer target), with its own num_classes

The in-memory ones (all but the folders) also take `dataset.classes` (a class subset,
relabelled), `dataset.resolution` and `dataset.channels` (batches resized / 1-channel images
repeated on the device); see options.py and in_memory.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from prunelab.data import cifar, digits, folders, mnist, synthetic
from prunelab.data.base import Dataset, Loader
from prunelab.errors import choose

BUILDERS: dict[str, Callable[[DictConfig, torch.device], Dataset]] = {
    "cifar10": cifar.build,
    "cifar100": cifar.build,
    "mnist": mnist.build,
    "digits": digits.build,
    "imagenet": folders.FolderDataset,
    "folder": folders.FolderDataset,
    "synthetic": synthetic.build,
}


def build_dataset(cfg: DictConfig, device: torch.device) -> Dataset:
    """The dataset named by `cfg.name`, with in-memory data already on `device`."""
    return BUILDERS[choose("dataset.name", str(cfg.name), BUILDERS)](cfg, device)


__all__ = ["BUILDERS", "Dataset", "Loader", "build_dataset"]
