"""The data contract every dataset implements.

A `Dataset` holds one dataset (train and test split, and a split "val" held out of the
training images when `dataset.val_images` > 0, by the rule in options.py) and hands out
loaders.  A `Loader` yields `(images, labels)` already on the training device: images
float32, normalised, augmented for training; labels int64.  Iteration order and
augmentation are a pure function of `(seed, epoch, rank)`, so a resumed run sees exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch

from prunelab.errors import UserError, choose

SPLITS = ("train", "val", "test")


def check_split(split: str, num_val: int) -> str:
    """`split` if it is one of SPLITS and, for "val", the dataset has a validation split."""
    choose("split", split, SPLITS)
    if split == "val" and not num_val:
        raise UserError(
            "split 'val' needs a validation split: set dataset.val_images=N (N training images are held out)"
        )
    return split


class Loader(ABC):
    """One split, one batch size; iterate once per epoch after `set_epoch`."""

    num_samples: int  # samples this rank sees per epoch

    @abstractmethod
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    @abstractmethod
    def __len__(self) -> int:
        """Batches per epoch on this rank."""

    @abstractmethod
    def set_epoch(self, epoch: int) -> None:
        """Reseed shuffling and augmentation for `epoch` (deterministic)."""


class Dataset(ABC):
    """A dataset with a train and a test split, e.g. CIFAR-10 or an ImageNet folder, and
    optionally a validation split held out of the training images (`num_val` > 0)."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) of one model input
    num_train: int
    num_test: int
    num_val: int = 0  # validation images held out of the training split (0: no "val" split)

    @abstractmethod
    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Loader:
        """A loader over `split` ("train", "val" or "test"; "val" only when `num_val` > 0).

        train=True shuffles and applies training augmentation; train=False keeps the
        order and applies the evaluation transform.  With world_size > 1 each rank gets
        a disjoint shard: with train=True ranks may repeat a few samples so that all have
        equal length; with train=False the shards cover every sample exactly once (their
        lengths may differ by one), so evaluation counts summed over ranks are exact.
        """

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of the data itself, computed once: datasets with the same tag (name and sizes) but other
        images or labels have different fingerprints, so a cache keyed by it is never reused across them."""

    classes: tuple[int, ...] | None = None  # the original labels kept (dataset.classes), None: all
    resolution: int | None = None  # the side batches are resized to (dataset.resolution), None: not resized

    @property
    def tag(self) -> str:
        """Short description of what was loaded: 'name[train/test]', e.g. 'cifar10[50000/10000]',
        or with a validation split 'name[train+val/test]', e.g. 'cifar10[4160+500/932]'.

        A class subset (`dataset.classes`) follows the name in braces, in the list's order,
        runs of consecutive ascending labels written first-last: 'cifar10{5-9}[25000/5000]',
        'cifar10{0,2,4}[...]', 'cifar10{0-2,7}[...]'.  A resize (`dataset.resolution` other than the
        native size) is appended as '@R': 'digits[1437/360]@32'.  Without a subset or a resize the
        tag is as before (a resolution equal to the native size resizes nothing and adds nothing)."""
        train = f"{self.num_train}+{self.num_val}" if self.num_val else f"{self.num_train}"
        classes = f"{{{class_list(self.classes)}}}" if self.classes is not None else ""
        size = f"@{self.resolution}" if self.resolution is not None else ""
        return f"{self.name}{classes}[{train}/{self.num_test}]{size}"


def class_list(classes: tuple[int, ...]) -> str:
    """`classes` in the list's order, maximal runs of consecutive ascending labels as 'first-last':
    (5, 6, 7, 8, 9) -> '5-9', (0, 2, 4) -> '0,2,4', (0, 1, 2, 7) -> '0-2,7', (9, 8) -> '9,8'."""
    runs: list[list[int]] = []
    for c in classes:
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs)
