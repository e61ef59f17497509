"""Config keys that every dataset reads the same way: `root`, `limit_train`/`limit_test` and
`val_images`/`val_seed`.

Validation split (every dataset kind, in-memory and folders alike, through `val_split`):
`dataset.val_images=N` holds N training images out as the split "val" (0, the default,
holds nothing out and leaves the training split exactly as it was).  After `limit_train`
is applied, let n be the number of training rows; a permutation of range(n) is drawn from
`sharding.generator(val_seed, "val")`; the validation split is the rows perm[:N], the
training split the rows perm[N:], each kept in ascending original row order
(`sharding.holdout`).  `dataset.val_seed` picks which images are held out and is
independent of the run's seed, so every seed of a sweep sees the same split.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

    Absent keys read as `val_images: 0`, `val_seed: 0`.
    """
    seed = cfg.get("val_seed", 0)
    if not _is_int(seed):
        raise UserError(f"dataset.val_seed must be an integer, got {seed!r}: set dataset.val_seed=0")
    value = cfg.get("val_images", 0)
    if _is_int(value) and value == 0:
        return None
    if not _is_int(value) or not 0 < value < n:
        raise UserError(
            f"dataset.val_images must be an integer from 0 to {n - 1} (held out of the {n} training images "
            f"after limit_train; 0 = no validation split), got {value!r}: set dataset.val_images=N with N < {n}"
        )
    return holdout(n, value, seed)
