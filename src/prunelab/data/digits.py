"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey images of 0-9, no download.

`sklearn.datasets.load_digits()` ships with scikit-learn (UCI "Optical Recognition of
Handwritten Digits", values 0..16: the count of set pixels in each 4x4 block of a 32x32
bitmap).  It is a real, tiny image set for quick CPU runs and transfer experiments.

Pixels: each value v in 0..16 becomes the uint8 round(v * 255 / 16) (numpy's rounding; the
only tie, v = 8 -> 127.5, rounds to 128), so 0 -> 0 and 16 -> 255 and the images take the same
uint8 path as CIFAR (in_memory.py).  Images come out as (N, 1, 8, 8).

Split (the set has none): with n = 1797 images in scikit-learn's order,
`perm = torch.randperm(n, generator=sharding.generator(split_seed, "digits"))`; the test split
is the images perm[:test_images], the training split the images perm[test_images:], each in
ascending original order (`sharding.holdout(n, test_images, split_seed, "digits")`).  Keys:
`dataset.split_seed` (default 0; independent of the run's seed) and `dataset.test_images`
(default 360, i.e. 1437 training images).  `classes`, `limit_train`/`limit_test` and
`val_images` then apply to these splits as for every in-memory dataset.
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from prunelab.data.in_memory import InMemoryDataset
from prunelab.data.sharding import holdout
from prunelab.errors import UserError

NUM_IMAGES = 1797
MAX_VALUE = 16  # load_digits() values are integers 0..16


def images_and_labels() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images as uint8 (N, 1, 8, 8), scaled round(v * 255 / 16), and int64 labels, in sklearn's order."""
    from sklearn.datasets import load_digits  # imported here: only this dataset needs scikit-learn

    digits = load_digits()
    pixels = np.round(digits.images * (255 / MAX_VALUE)).astype(np.uint8)
    return torch.from_numpy(pixels).unsqueeze(1), torch.from_numpy(digits.target.astype(np.int64))


def split_rows(test_images: int, split_seed: int, n: int = NUM_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, test rows) of the `n` images by the rule of the module docstring."""
    return holdout(n, test_images, split_seed, "digits")


def _int(cfg: DictConfig, key: str, default: int) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"dataset.{key} must be an integer, got {value!r}: set dataset.{key}={default}")
    return value


def build(cfg: DictConfig, device: torch.device) -> InMemoryDataset:
    """The digits split by `dataset.split_seed` and `dataset.test_images` (module docstring)."""
    split_seed, test_images = _int(cfg, "split_seed", 0), _int(cfg, "test_images", 360)
    if not 0 < test_images < NUM_IMAGES:
        raise UserError(
            f"dataset.test_images must be from 1 to {NUM_IMAGES - 1} (of the {NUM_IMAGES} digits), "
            f"got {test_images}: set dataset.test_images=360"
        )
    images, labels = images_and_labels()
    train_rows, test_rows = split_rows(test_images, split_seed)
    return InMemoryDataset.from_config(
        cfg, (images[train_rows], labels[train_rows]), (images[test_rows], labels[test_rows]), device
    )
