"""Config keys that every dataset reads the same way: `root`, `limit_train`/`limit_test` and
`val_images`/`val_seed`; and the keys of the in-memory datasets (in_memory.py): `classes`,
`resolution`, `channels`.

Order of the row selections of an in-memory dataset (`InMemoryDataset.from_config`): first
`classes` (both splits), then `limit_train`/`limit_test`, then the validation hold-out.

Validation split (every dataset kind, in-memory and folders alike, through `val_split`):
`dataset.val_images=N` holds N training images out as the split "val" (0, the default,
holds nothing out and leaves the training split exactly as it was).  After `limit_train`
is applied, let n be the number of training rows; a permutation of range(n) is drawn from
`sharding.generator(val_seed, "val")`; the validation split is the rows perm[:N], the
training split the rows perm[N:], each kept in ascending original row order
(`sharding.holdout`).  `dataset.val_seed` picks which images are held out and is
independent of the run's seed, so every seed of a sweep sees the same split.

Class subset (in-memory datasets, through `select_classes`): `dataset.classes: [c0, c1, ...]`
keeps, in the training and the test split alike, only the rows whose label is one of the
listed classes, in their original row order, and relabels class c_k to k (its index in the
list, so the list's order matters: [9, 8] maps 9 -> 0 and 8 -> 1).  This happens before
`limit_train`/`limit_test` and before the validation hold-out, so those count and draw rows
of the subset.  `dataset.num_classes` must equal len(classes).  null (the default) keeps
every row and label as it is.  E.g. CIFAR-10 split for transfer: `dataset.classes=[0,1,2,3,4]
dataset.num_classes=5` (source) and `dataset.classes=[5,6,7,8,9] dataset.num_classes=5` (target).

Resolution and channels (in-memory datasets; applied per batch by `TensorLoader`):
`dataset.resolution: R` resizes every batch to R x R on the device after crop, flip and
normalisation at the native size (R equal to the native size resizes nothing);
`dataset.channels: C` repeats 1-channel images to C channels (C equal to the native count
is a no-op; any other change of channels is an error).  Both null (the default): batches
are exactly as without the keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, ListConfig

from prunelab.data.sharding import holdout
from prunelab.errors import UserError


def root(cfg: DictConfig) -> Path:
    """`dataset.root` as an absolute path.

    A relative root is taken relative to the directory the user ran from, not Hydra's run
    directory: inside a Hydra run `to_absolute_path` resolves against the original working
    directory; outside one (tests, notebooks) it resolves against the current directory.
    """
    if cfg.get("root") is None:
        raise UserError(f"dataset.root is not set for {cfg.name}: set dataset.root=PATH")
    return Path(to_absolute_path(str(Path(str(cfg.root)).expanduser())))


IN_MEMORY_KEYS = ("classes", "resolution", "channels")  # keys only in-memory datasets read


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_positive_int(cfg: DictConfig, key: str, example: int) -> int | None:
    value = cfg.get(key)
    if value is not None and (not _is_int(value) or value < 1):
        raise UserError(f"dataset.{key} must be null or a positive integer, got {value!r}: set dataset.{key}={example}")
    return value


def resolution(cfg: DictConfig) -> int | None:
    """`dataset.resolution`: the side R every batch is resized to (None: the native size)."""
    return _optional_positive_int(cfg, "resolution", 32)


def channels(cfg: DictConfig) -> int | None:
    """`dataset.channels`: the channel count C 1-channel images are repeated to (None: native)."""
    return _optional_positive_int(cfg, "channels", 3)


def classes(cfg: DictConfig) -> tuple[int, ...] | None:
    """`dataset.classes` as a tuple of distinct non-negative integers (None when null or absent),
    checked against `dataset.num_classes`, which must be its length."""
    value = cfg.get("classes")
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else None
    if not items or not all(_is_int(c) and c >= 0 for c in items) or len(set(items)) != len(items):
        raise UserError(
            f"dataset.classes must be null or a non-empty list of distinct class labels >= 0, got {value!r}: "
            "set dataset.classes=[5,6,7,8,9] (or null for all classes)"
        )
    if int(cfg.num_classes) != len(items):
        raise UserError(
            f"dataset.num_classes={cfg.num_classes} but dataset.classes keeps {len(items)} classes {items}: "
            f"set dataset.num_classes={len(items)}"
        )
    return tuple(items)


Split = tuple[torch.Tensor, torch.Tensor]  # (images, labels) of one split


def select_classes(cfg: DictConfig, train: Split, test: Split) -> tuple[Split, Split]:
    """`train` and `test` restricted to `dataset.classes` and relabelled, by the rule of the
    module docstring; both unchanged (the same tensors) when `dataset.classes` is null."""
    kept = classes(cfg)
    if kept is None:
        return train, test
    top = max(kept + tuple(int(labels.max()) for _, labels in (train, test) if len(labels)))
    lookup = torch.full((top + 1,), -1)  # original label -> its index in `kept`, or -1: dropped
    lookup[list(kept)] = torch.arange(len(kept))

    def select(images: torch.Tensor, labels: torch.Tensor) -> Split:
        labels = labels.to(torch.int64)
        new = torch.where(labels >= 0, lookup.to(labels.device)[labels.clamp(min=0)], -1)
        rows = (new >= 0).nonzero().flatten()  # ascending: the original row order
        return images[rows], new[rows]

    original = train[1]
    train, test = select(*train), select(*test)
    missing = [c for c, n in zip(kept, torch.bincount(train[1], minlength=len(kept)).tolist()) if n == 0]
    if missing:
        present = f" (its labels are {int(original.min())}..{int(original.max())})" if len(original) else ""
        raise UserError(
            f"dataset.classes lists {missing} but no training image of {cfg.name} has that label{present}: "
            "fix dataset.classes"
        )
    return train, test


def limit(cfg: DictConfig, split: str) -> int | None:
    """`dataset.limit_<split>`: keep only the first N rows of that split (None keeps all)."""
    key = f"limit_{split}"
    value = cfg.get(key)
    if value is not None and (not _is_int(value) or value < 1):
        raise UserError(f"dataset.{key} must be null or a positive integer, got {value!r}: set dataset.{key}=N")
    return value


def val_split(cfg: DictConfig, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(training rows, validation rows) of the `n` training rows left after `limit_train`,
    by the rule of the module docstring; None when `dataset.val_images` is 0 (the default).

    Absent keys read as `val_images: 0`, `val_seed: 0`.  A fraction in (0, 1) holds out
    round(fraction * n) images (at least one), so one setting suits datasets of any size.
    """
    seed = cfg.get("val_seed", 0)
    if not _is_int(seed):
        raise UserError(f"dataset.val_seed must be an integer, got {seed!r}: set dataset.val_seed=0")
    value = cfg.get("val_images", 0)
    if isinstance(value, float) and 0 < value < 1:
        value = max(1, round(value * n))
    if _is_int(value) and value == 0:
        return None
    if not _is_int(value) or not 0 < value < n:
        raise UserError(
            f"dataset.val_images must be an integer from 0 to {n - 1} or a fraction in (0, 1) (held out of the {n} "
            f"training images after limit_train; 0 = no validation split), got {value!r}: set dataset.val_images=N "
            f"with N < {n}"
        )
    return holdout(n, value, seed)
