"""The dense baseline: trained once per (model, dataset, recipe, seed) and cached.

Every point of a sweep that shares those four starts from the same weights, which is
what makes pruning results comparable (Blalock et al. 2020).  The cache entry is named
by a hash of the model config, the data actually loaded (its tag, the fingerprint of its
contents, `Dataset.fingerprint`, and its transform keys, not its path), the baseline recipe
and the seed: a dataset folder replaced by a copy of the same size with other images or
labels trains a new baseline, the same data moved elsewhere reuses it.  Training resumes from its own epoch
checkpoint, and a file lock makes concurrent sweep jobs wait for one training instead
of repeating it.  `baseline.checkpoint=PATH` loads weights instead of training.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prunelab.data.base import Dataset
from prunelab.errors import UserError
from prunelab.models import build_model
from prunelab.train import checkpoint as ckpt
from prunelab.train.distributed import World, barrier
from prunelab.train.loop import evaluate, fit
from prunelab.train.stage import Stage

log = logging.getLogger(__name__)

DATA_KEYS_IGNORED = ("root", "download", "num_workers")


@dataclass
class Baseline:
    model: nn.Module
    acc: float | None  # test top-1 (%) of the dense model
    epochs: int  # epochs it was trained for (0 when loaded from a foreign state dict)
    source: str  # cache entry or checkpoint path
    data: str = ""  # tag of the data it was trained and evaluated on


def digest(obj: Any) -> str:
    """A stable short hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_key(cfg: DictConfig, data: Dataset, dataset_cfg: DictConfig | None = None) -> str:
    """'<model>-<dataset>-<hash>-seed<seed>' for the baseline cache (`dataset_cfg`: the data it trains on,
    by default `cfg.dataset`)."""
    dataset_cfg = cfg.dataset if dataset_cfg is None else dataset_cfg
    dataset = {k: v for k, v in OmegaConf.to_container(dataset_cfg, resolve=True).items() if k not in DATA_KEYS_IGNORED}
    parts = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "data": [data.tag, data.fingerprint, dataset],
        "recipe": OmegaConf.to_container(cfg.baseline.trainer, resolve=True),
        "seed": int(cfg.seed),
    }
    return f"{cfg.model.name}-{dataset_cfg.name}-{digest(parts)}-seed{int(cfg.seed)}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The cache entry's lock; a line in the log when another job holds it (it trains that baseline)."""
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for %s: another job is training this dense baseline", path.parent)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def recorded_training(payload: dict[str, Any], path: Path) -> tuple[float | None, int]:
    """(test accuracy in %, epochs) a `baseline.checkpoint` records: None (evaluated here) and 0 when absent; a
    `UserError` for values no training gives, before they reach the record."""
    acc, epochs = payload.get("acc"), payload.get("epochs", 0)
    number = isinstance(acc, (int, float)) and not isinstance(acc, bool)
    if acc is not None and not (number and 0 <= acc <= 100):
        raise UserError(f"baseline.checkpoint: {path} records acc={acc!r}, not an accuracy in [0, 100] %: save it "
                        "again without 'acc' (the run then evaluates the model) or with the right value")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise UserError(f"baseline.checkpoint: {path} records epochs={epochs!r}, not a number of epochs >= 0: save it "
                        "again without 'epochs' or with the right value")
    return (None if acc is None else float(acc)), epochs


def dense_baseline(cfg: DictConfig, data: Dataset, device: torch.device, world: World,
                   dataset_cfg: DictConfig | None = None) -> Baseline:
    """The trained dense model for this config (eval mode), from a checkpoint or the cache; trained and
    evaluated on `data`, whose config is `dataset_cfg` (default `cfg.dataset`; a transfer source otherwise)."""
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg.model, data.num_classes).to(device)
    if cfg.baseline.checkpoint:
        path = Path(str(cfg.baseline.checkpoint))
        payload = ckpt.load(path)
        ckpt.load_weights(model, payload["model"], path, key="baseline.checkpoint")
        acc, epochs = recorded_training(payload, path)
        if acc is None:
            acc = evaluate(model, data, cfg.baseline.trainer, device, world)
        return Baseline(model.eval(), acc, epochs, str(path), data.tag)
    entry = Path(str(cfg.paths.baselines)) / cache_key(cfg, data, dataset_cfg)
    final = entry / "dense.pt"
    if world.is_main:
        entry.mkdir(parents=True, exist_ok=True)
    barrier()
    with _locked(entry / ".lock") if world.is_main else nullcontext():
        if not final.is_file():
            result = fit(
                model, data, Stage("baseline", cfg.baseline.trainer), device=device, seed=int(cfg.seed), world=world,
                checkpoint=entry / "last.pt", resume=True, fingerprint=entry.name,
            )
            if world.is_main:
                ckpt.save_model(final, model, acc=result.acc_final, epochs=result.epochs, history=result.history)
                (entry / "last.pt").unlink(missing_ok=True)
        barrier()
    payload = ckpt.load(final, key="baseline cache", fix=f"delete {entry} (the baseline is trained again)")
    ckpt.load_weights(model, payload["model"], final, key="baseline cache")
    return Baseline(model.eval(), float(payload["acc"]), int(payload["epochs"]), str(entry), data.tag)
