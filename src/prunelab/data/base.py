"""The data contract every dataset implements.

A `Dataset` holds one dataset (train and test split) and hands out loaders.  A `Loader`
yields `(images, labels)` already on the training device: images float32, normalised,
augmented for training; labels int64.  Iteration order and augmentation are a pure
function of `(seed, epoch, rank)`, so a resumed run sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch


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
    """A dataset with a train and a test split, e.g. CIFAR-10 or an ImageNet folder."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) of one model input
    num_train: int
    num_test: int

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
        """A loader over `split` ("train" or "test").

        train=True shuffles and applies training augmentation; train=False keeps the
        order and applies the evaluation transform.  With world_size > 1 each rank gets
        a disjoint shard: with train=True ranks may repeat a few samples so that all have
        equal length; with train=False the shards cover every sample exactly once (their
        lengths may differ by one), so evaluation counts summed over ranks are exact.
        """

    @property
    def tag(self) -> str:
        """Short description of what was loaded, e.g. 'cifar10[50000/10000]'."""
        return f"{self.name}[{self.num_train}/{self.num_test}]"
