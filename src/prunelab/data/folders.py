"""Image-folder datasets (ImageNet, transfer targets): `root/train/<class>/*` and `root/val/<class>/*`.

Too large to hold on the device, these decode JPEGs in DataLoader workers with the
standard torchvision transforms: train `RandomResizedCrop(input_size)` + horizontal flip,
evaluation `Resize(resize)` + `CenterCrop(input_size)`, then ImageNet normalisation.

Determinism: the sampler yields `(index, augmentation seed)` pairs, the order from
`sharding.shard_indices` and the seeds from a generator of (seed, epoch, rank).  Each
sample's random transform runs under its own seed, so the batches depend on neither
the number of workers nor which worker (persistent or not) decoded which image.

Validation split (`dataset.val_images=N`, `dataset.val_seed`): held out of `root/train`
(`root/val` is the test split).  After `limit_train`, with n training images in sorted file
order, a permutation of range(n) is drawn from `sharding.generator(val_seed, "val")`; the
images perm[:N] become the split "val", the images perm[N:] the split "train", each in
ascending file order (`options.val_split`, the one implementation shared with
in_memory.py).  "val" is served like "test": evaluation transform, fixed order.  With N = 0
the training Subset is exactly `range(min(len, limit_train))`, as without the keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler, Subset

from prunelab.data import options
from prunelab.data.base import Dataset, Loader, check_split
from prunelab.data.sharding import generator, shard_indices
from prunelab.errors import UserError

SPLIT_FOLDERS = {"train": "train", "test": "val"}  # our split name -> subfolder of root


class SeededSamples(torch.utils.data.Dataset):
    """`ds[(index, seed)]`: sample `index` of `images` (PIL, label), transformed under `seed`."""

    def __init__(self, images: torch.utils.data.Dataset, transform: Callable) -> None:
        self.images, self.transform = images, transform

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        image, label = self.images[index]
        with torch.random.fork_rng(devices=[]):  # leaves the caller's CPU stream untouched
            torch.manual_seed(seed)
            return self.transform(image), label


class EpochSampler(Sampler[tuple[int, int]]):
    """This rank's `(index, seed)` pairs for the current epoch (see sharding.py)."""

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int, world_size: int) -> None:
        self.n, self.shuffle = n, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.num_samples = len(self._indices())  # the same in every epoch

    def _indices(self) -> torch.Tensor:
        return shard_indices(
            self.n, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch, rank=self.rank, world_size=self.world_size
        )

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self._indices()
        seeds = torch.randint(2**62, (len(indices),), generator=generator(self.seed, self.epoch, self.rank, "augment"))
        return zip(indices.tolist(), seeds.tolist())


class FolderLoader(Loader):
    """A DataLoader over one split whose batches are moved to `device` without blocking."""

    def __init__(
        self,
        samples: SeededSamples,
        batch_size: int,
        *,
        train: bool,
        seed: int,
        rank: int,
        world_size: int,
        num_workers: int,
        device: torch.device,
    ) -> None:
        self.device = device
        self.sampler = EpochSampler(len(samples.images), shuffle=train, seed=seed, rank=rank, world_size=world_size)
        self.num_samples = self.sampler.num_samples
        self.batches = DataLoader(
            samples,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.batches:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


class FolderDataset(Dataset):
    """`ImageFolder`s on `root/train` and `root/val` (the test split), and the split "val" held out
    of `root/train` when `dataset.val_images` > 0; the transform follows the loader's `train` flag."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.name, self.num_classes, self.device = str(cfg.name), int(cfg.num_classes), device
        for key in options.IN_MEMORY_KEYS:
            if cfg.get(key) is not None:
                raise UserError(
                    f"dataset.{key} applies only to in-memory datasets (cifar10, cifar100, mnist, digits, synthetic), "
                    f"not to image folders ({self.name}): remove dataset.{key}"
                )
        if cfg.download:
            raise UserError(
                f"{self.name} cannot be downloaded: set dataset.download=false and extract it under dataset.root"
            )
        size, resize = int(cfg.input_size), int(cfg.resize)
        if resize < size:
            raise UserError(
                f"dataset.resize={resize} is smaller than dataset.input_size={size}: set dataset.resize>={size}"
            )
        self.num_workers = int(cfg.num_workers)
        if self.num_workers < 0:
            raise UserError(f"dataset.num_workers must be >= 0, got {self.num_workers}: set dataset.num_workers=8")
        self.input_shape = (3, size, size)
        # torchvision is imported on use: importing it takes seconds that in-memory datasets never need
        from torchvision import transforms

        normalise = [transforms.ToTensor(), transforms.Normalize(list(cfg.mean), list(cfg.std))]
        flip = [transforms.RandomHorizontalFlip()] if cfg.flip else []
        self.transforms = {
            True: transforms.Compose([transforms.RandomResizedCrop(size), *flip, *normalise]),
            False: transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size), *normalise]),
        }
        root = options.root(cfg)
        self.splits = {
            split: self._split(root / folder, options.limit(cfg, split)) for split, folder in SPLIT_FOLDERS.items()
        }
        classes = {split: subset.dataset.classes for split, subset in self.splits.items()}
        if classes["train"] != classes["test"]:
            raise UserError(f"{root}/train and {root}/val have different class folders: make them match")
        train = self.splits["train"]
        rows = options.val_split(cfg, len(train))
        if rows is not None:
            for split, chosen in zip(("train", "val"), rows):
                self.splits[split] = Subset(train.dataset, [train.indices[i] for i in chosen.tolist()])
        self.num_train, self.num_test = len(self.splits["train"]), len(self.splits["test"])
        self.num_val = len(self.splits["val"]) if "val" in self.splits else 0

    @cached_property
    def fingerprint(self) -> str:
        """blake2b of the file list: per split, each image's path below its split folder (class folder
        included) and its label.  Moving images between classes or swapping the set changes it; a file
        overwritten in place by another of the same name does not (hashing ImageNet's bytes takes minutes)."""
        h = hashlib.blake2b(digest_size=16)
        for split in sorted(self.splits):
            subset = self.splits[split]
            folder, start = subset.dataset, len(subset.dataset.root)
            h.update(f"{split}\n".encode())
            for i in subset.indices:
                path, label = folder.samples[i]
                h.update(f"{path[start:]}\t{label}\n".encode())
        return h.hexdigest()

    def _split(self, path: Path, limit: int | None) -> Subset:
        """The first `limit` (image, label) pairs of the ImageFolder at `path`, in its sorted file order."""
        from torchvision.datasets import ImageFolder

        fix = "set dataset.root=PATH to a folder with train/ and val/, each holding one subfolder per class"
        if not path.is_dir():
            raise UserError(f"{self.name}: no folder {path}; {fix}")
        try:
            folder = ImageFolder(str(path))
        except FileNotFoundError as err:  # no class folders, or a class without images
            raise UserError(f"{self.name}: {err}; {fix}") from err
        if len(folder.classes) != self.num_classes:
            raise UserError(
                f"dataset.num_classes={self.num_classes} but {path} has {len(folder.classes)} class folders: "
                f"set dataset.num_classes={len(folder.classes)} or point dataset.root at the right folder"
            )
        return Subset(folder, range(min(len(folder), limit or len(folder))))

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> FolderLoader:
        return FolderLoader(
            SeededSamples(self.splits[check_split(split, self.num_val)], self.transforms[train]),
            batch_size,
            train=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
            num_workers=self.num_workers,
            device=self.device,
        )

