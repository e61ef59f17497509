"""Config keys that every dataset reads the same way: `root` and `limit_train`/`limit_test`."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import to_absolute_path
from omegaconf import DictConfig

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


def limit(cfg: DictConfig, split: str) -> int | None:
    """`dataset.limit_<split>`: keep only the first N rows of that split (None keeps all)."""
    key = f"limit_{split}"
    value = cfg.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"dataset.{key} must be null or a positive integer, got {value!r}: set dataset.{key}=N")
    return value
