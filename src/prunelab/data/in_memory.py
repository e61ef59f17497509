"""Small datasets held whole on the training device as uint8, augmented there in batches.

CIFAR, MNIST, scikit-learn's digits and the synthetic dataset take this path (docs/design.md,
"Speed"): the uint8 images are moved to the device once; each batch is gathered, cropped,
flipped and normalised there with a handful of batched kernels, with no PIL, no per-image
Python loop and no host synchronisation per step.  Random numbers for a whole epoch are drawn up front on a
CPU generator seeded by (seed, epoch, rank) and copied to the device once per epoch.

Validation split (`dataset.val_images=N`, `dataset.val_seed`; `from_config`): after
`limit_train`, with n training rows, a permutation of range(n) is drawn from
`sharding.generator(val_seed, "val")`; the rows perm[:N] become the split "val", the rows
perm[N:] the split "train", each in ascending original row order (`options.val_split`, the
one implementation shared with folders.py).  "val" is served like "test": evaluation
transform, fixed order.  With N = 0 the training tensors are those of `limit_train` alone.

Class subset (`dataset.classes=[c0, c1, ...]`; `from_config`, by `options.select_classes`):
both splits keep only the rows of the listed classes, relabelled c_k -> k, before
`limit_train`/`limit_test` and before the validation hold-out.

Resolution and channels (`dataset.resolution=R`, `dataset.channels=C`; `TensorLoader`): the
images stay at their native size and channel count on the device; every batch of every
split is cropped, flipped and normalised at the native size, then resized to R x R
(`F.interpolate`, bilinear, align_corners=False, antialias=False; skipped when R is the
native size, which also leaves the tag as it is) and, for 1-channel images, repeated to C
channels.  `input_shape` is then (C, R, R).  Both null: the batches are exactly those
without the keys.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from functools import cached_property

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from prunelab.data import options
from prunelab.data.base import Dataset, Loader, check_split
from prunelab.data.sharding import generator, shard_indices
from prunelab.errors import UserError

log = logging.getLogger(__name__)


class TensorLoader(Loader):
    """Batches of one uint8 split already on the device.

    Training: a random crop of the image zero-padded by `pad` pixels (before
    normalisation, i.e. torchvision's `RandomCrop(size, padding=pad)`), then a horizontal
    flip with probability 0.5 when `flip`, then normalisation.  Evaluation: normalisation
    only, in a fixed order.  Then, in both cases, a bilinear resize to `resolution` x
    `resolution` and a repeat of 1-channel images to `channels` channels, when those are
    set.  Outputs are contiguous float32 (B, C, H, W).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        mean: torch.Tensor,
        std: torch.Tensor,
        pad: int,
        flip: bool,
        seed: int,
        rank: int,
        world_size: int,
        resolution: int | None = None,
        channels: int | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.train = batch_size, train
        self.mean, self.std = mean, std
        self.pad, self.flip = pad, flip
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.num_samples = len(self._indices())
        c, h, w = images.shape[1:]
        self.size = None if resolution is None or (h, w) == (resolution, resolution) else (resolution, resolution)
        self.channels = None if channels is None or channels == c else channels
        device = images.device
        self._items = torch.arange(batch_size, device=device).view(-1, 1, 1, 1)
        self._channels = torch.arange(c, device=device).view(1, c, 1, 1)
        self._rows = torch.arange(h, device=device)
        self._cols = torch.arange(w, device=device)

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        return shard_indices(
            len(self.labels),
            shuffle=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.images.device
        indices = self._indices()
        augment = self._draw_augmentation(len(indices)) if self.train else None
        indices = indices.to(device, non_blocking=True)
        for start in range(0, len(indices), self.batch_size):
            window = slice(start, start + self.batch_size)
            batch = indices[window]
            images = self.images[batch]
            if augment is not None:
                images = self._crop_and_flip(images, augment[0][window], augment[1][window])
            yield self._reshape(self._normalise(images)), self.labels[batch]

    def _draw_augmentation(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop offsets (n, 2) in [0, 2*pad] and flip flags (n,) for this epoch and rank."""
        gen = generator(self.seed, self.epoch, self.rank, "augment")
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        device = self.images.device
        return offsets.to(device, non_blocking=True), flips.to(device, non_blocking=True)

    def _crop_and_flip(self, batch: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """One gather from the zero-padded batch: out[b, c, i, j] = padded[b, c, dy + i, col(j)],
        with col(j) = dx + j, or dx + W-1-j when flipped."""
        padded = F.pad(batch, (self.pad,) * 4)
        rows = offsets[:, :1] + self._rows
        cols = offsets[:, 1:] + torch.where(flips[:, None], self._cols.flip(0), self._cols)
        return padded[self._items[: len(batch)], self._channels, rows[:, None, :, None], cols[:, None, None, :]]

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32 in [0, 1] -> (x - mean) / std, as ToTensor + Normalize."""
        return batch.float().div_(255).sub_(self.mean).div_(self.std)

    def _reshape(self, batch: torch.Tensor) -> torch.Tensor:
        """The normalised batch resized to `resolution` and repeated to `channels` (when set)."""
        if self.size is not None:
            batch = F.interpolate(batch, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        if self.channels is not None:
            batch = batch.expand(-1, self.channels, -1, -1).contiguous()
        return batch


class InMemoryDataset(Dataset):
    """Train and test splits (and an optional validation split `val`) as uint8 (N, C, H, W)
    tensors and int64 labels on `device`.

    `classes` only records which original labels the labels 0..k-1 stand for (for the tag;
    `from_config` selects the rows); `resolution` and `channels` are applied by the loaders.
    """

    def __init__(
        self,
        name: str,
        train: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor],
        *,
        num_classes: int,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int,
        flip: bool,
        device: torch.device,
        val: tuple[torch.Tensor, torch.Tensor] | None = None,
        classes: Sequence[int] | None = None,
        resolution: int | None = None,
        channels: int | None = None,
    ) -> None:
        splits = {"train": train, "test": test, **({"val": val} if val is not None and len(val[1]) else {})}
        labels = [split[1] for split in splits.values()]
        channels_in, height, width = train[0].shape[1:]
        if (height, width) != (input_size, input_size):
            raise UserError(
                f"dataset.input_size={input_size} but {name} images are {height}x{width}: "
                f"set dataset.input_size={height} (the native size; dataset.resolution=R resizes the batches)"
            )
        top = int(max(y.max() for y in labels))
        if top >= num_classes or min(y.min() for y in labels) < 0:
            raise UserError(
                f"dataset.num_classes={num_classes} but {name} has labels up to {top}: "
                f"set dataset.num_classes={top + 1}"
            )
        if top + 1 < num_classes:
            log.warning("dataset.num_classes=%d but %s has labels only up to %d: the classifier gets %d outputs no "
                        "image trains (set dataset.num_classes=%d if that is not meant)", num_classes, name, top,
                        num_classes - top - 1, top + 1)
        if len(mean) != channels_in or len(std) != channels_in or min(std) <= 0:
            raise UserError(
                f"dataset.mean and dataset.std need {channels_in} values each (std > 0), "
                f"got {list(mean)} and {list(std)}: fix them in the dataset config"
            )
        if pad < 0:
            raise UserError(f"dataset.pad must be >= 0, got {pad}: set dataset.pad=4 (or 0 to disable cropping)")
        if resolution is not None and resolution < 1:
            raise UserError(
                f"dataset.resolution must be null or a positive integer, got {resolution}: set dataset.resolution=32"
            )
        if channels is not None and channels < 1:
            raise UserError(
                f"dataset.channels must be null or a positive integer, got {channels}: set dataset.channels=3"
            )
        if channels is not None and channels != channels_in and channels_in != 1:
            raise UserError(
                f"dataset.channels={channels} but {name} images have {channels_in} channels: only 1-channel "
                f"images can be repeated to C channels; set dataset.channels=null (or {channels_in})"
            )
        self.name, self.num_classes = name, num_classes
        self.classes = tuple(classes) if classes is not None else None
        resized = resolution is not None and (height, width) != (resolution, resolution)
        self.resolution = resolution if resized else None  # None: batches keep the native size
        self.channels = channels if channels is not None and channels != channels_in else None
        side = (resolution, resolution) if resized else (height, width)
        self.input_shape = (self.channels or channels_in, *side)
        self.num_train, self.num_test = len(train[1]), len(test[1])
        self.num_val = len(splits["val"][1]) if "val" in splits else 0
        self.pad, self.flip = pad, flip
        self.splits = {
            split: (images.to(device).contiguous(), labels.to(device, torch.int64))
            for split, (images, labels) in splits.items()
        }
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    @cached_property
    def fingerprint(self) -> str:
        """blake2b of every split's uint8 images and labels as loaded (shape, dtype and bytes; CIFAR-10 in a
        fraction of a second), computed on first use."""
        h = hashlib.blake2b(digest_size=16)
        for split in sorted(self.splits):
            for tensor in self.splits[split]:
                array = tensor.cpu().contiguous().numpy()
                h.update(f"{split} {array.dtype} {array.shape}".encode())
                h.update(array)
        return h.hexdigest()

    @classmethod
    def from_config(
        cls,
        cfg: DictConfig,
        train: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor],
        device: torch.device,
    ) -> InMemoryDataset:
        """Keep the rows of `classes` (relabelled), then the first `limit_train`/`limit_test` rows,
        hold out `val_images` of the training rows as the split "val" (module docstring) and
        apply the config's transform keys."""
        (train_images, train_labels), (test_images, test_labels) = options.select_classes(cfg, train, test)
        n_train, n_test = options.limit(cfg, "train"), options.limit(cfg, "test")
        train_images, train_labels = train_images[:n_train], train_labels[:n_train]
        val, rows = None, options.val_split(cfg, len(train_labels))
        if rows is not None:
            train_rows, val_rows = rows
            val = train_images[val_rows], train_labels[val_rows]
            train_images, train_labels = train_images[train_rows], train_labels[train_rows]
        return cls(
            str(cfg.name),
            (train_images, train_labels),
            (test_images[:n_test], test_labels[:n_test]),
            num_classes=int(cfg.num_classes),
            input_size=int(cfg.input_size),
            mean=list(cfg.mean),
            std=list(cfg.std),
            pad=int(cfg.pad),
            flip=bool(cfg.flip),
            device=device,
            val=val,
            classes=options.classes(cfg),
            resolution=options.resolution(cfg),
            channels=options.channels(cfg),
        )

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> TensorLoader:
        images, labels = self.splits[check_split(split, self.num_val)]
        return TensorLoader(
            images,
            labels,
            batch_size,
            train=train,
            mean=self.mean,
            std=self.std,
            pad=self.pad,
            flip=self.flip,
            seed=seed,
            rank=rank,
            world_size=world_size,
            resolution=self.resolution,
            channels=self.channels,
        )


def random_like(cfg: DictConfig, n: int = 8, device: torch.device | None = None) -> InMemoryDataset:
    """`n` random uint8 images of the native shape a dataset config describes (len(dataset.mean)
    channels, dataset.input_size pixels) with random labels in range(dataset.num_classes) (the last one the
    largest, so the label range matches num_classes and raises no warning), served
    like the real data with `dataset.resolution`/`dataset.channels`, so that `input_shape` is the
    one the real dataset would have; the same images serve as train, val and test.  Nothing is read
    or downloaded (for cost estimates)."""
    size, classes, channels_in = int(cfg.input_size), int(cfg.num_classes), len(cfg.mean)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels_in, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    labels[-1] = classes - 1
    return InMemoryDataset(
        f"random-{cfg.name}", (images, labels), (images, labels), num_classes=classes, input_size=size,
        mean=list(cfg.mean), std=list(cfg.std), pad=0, flip=False, device=device or torch.device("cpu"),
        resolution=options.resolution(cfg), channels=options.channels(cfg), val=(images, labels),
    )
