"""The training loop shared by every phase: dense baseline, fine-tuning, training from scratch.

Per step: set the scheduled learning rate, forward (bf16 autocast and channels_last on
CUDA), cross-entropy (+ label smoothing) plus the callbacks' extra losses, SGD step,
`on_step_end`.  Loss and accuracy are summed on the device: the host synchronises once
per epoch, when the epoch's numbers are read (and a non-finite loss stops the run).
After each epoch: `on_epoch_end`, evaluation, an atomic checkpoint.  Resuming loads that
checkpoint and continues; since data order and augmentation depend only on
(seed, epoch), a resumed run ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from prunelab.data.base import Dataset
from prunelab.errors import UserError
from prunelab.measure.accuracy import top1
from prunelab.train import checkpoint as ckpt
from prunelab.train.callbacks import Callback, TrainState
from prunelab.train.distributed import World, all_reduce_sum, barrier, wrap
from prunelab.train.optim import build_optimizer, check_recipe, lr_at

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    acc_final: float = 0.0  # test top-1 (%) after the last epoch
    acc_best: float = 0.0  # best epoch (secondary)
    epochs: int = 0
    train_time_s: float = 0.0


@dataclass(frozen=True)
class Speed:
    """How the device runs the model: bf16 autocast, channels_last, torch.compile."""

    autocast: bool
    channels_last: bool
    compile: bool

    @classmethod
    def of(cls, recipe: Mapping[str, Any], device: torch.device) -> Speed:
        cuda = device.type == "cuda"
        return cls(cuda and recipe["amp"] == "bf16", cuda and bool(recipe["channels_last"]), bool(recipe["compile"]))


def fit(
    model: nn.Module,
    data: Dataset,
    recipe: Mapping[str, Any],
    *,
    phase: str,
    device: torch.device,
    seed: int,
    world: World = World(),
    callbacks: Sequence[Callback] = (),
    checkpoint: Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train `model` in place for `recipe["epochs"]` epochs and return its history.

    `checkpoint` is written after every epoch (rank 0); with `resume` an existing one is
    loaded first.  `fingerprint` identifies the configuration: resuming from a checkpoint
    with another fingerprint is refused.  `on_epoch` receives each history row (rank 0).
    """
    check_recipe(recipe)
    speed = Speed.of(recipe, device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, recipe)
    train_loader = data.loader(
        "train", int(recipe["batch_size"]), train=True, seed=seed, rank=world.rank, world_size=world.world_size
    )
    test_loader = data.loader(
        "test", int(recipe["eval_batch_size"]), train=False, rank=world.rank, world_size=world.world_size
    )
    epochs = int(recipe["epochs"])
    steps = len(train_loader) if recipe["limit_steps"] is None else min(len(train_loader), int(recipe["limit_steps"]))
    state = TrainState(model, optimizer, device, epochs=epochs, steps_per_epoch=steps, phase=phase)
    result = FitResult()
    if resume and checkpoint is not None and checkpoint.is_file():
        _restore(checkpoint, fingerprint, state, callbacks, result)
        for row in result.history if on_epoch is not None and world.is_main else ():
            on_epoch(row)  # a resumed run's record starts with the epochs it restored
    if result.epochs == epochs:  # finished before (or epochs == 0): nothing to train
        if epochs == 0:
            result.acc_final = result.acc_best = _evaluate(model, test_loader, device, speed, recipe)
        return result
    runner = wrap(model, device, world)
    if speed.compile:
        runner = torch.compile(runner)
    for cb in callbacks:
        cb.on_fit_start(state)
    for epoch in range(result.epochs, epochs):
        started = time.perf_counter()
        state.epoch, state.step_in_epoch = epoch, 0
        train_loader.set_epoch(epoch)
        model.train()
        for cb in callbacks:
            cb.on_epoch_start(state)
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n
        bar = tqdm(total=steps, desc=f"{phase} {epoch + 1}/{epochs}", leave=False, disable=None if world.is_main else True)
        for i, (images, labels) in enumerate(train_loader):
            if i >= steps:
                break
            lr = lr_at(recipe, epoch + i / steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if speed.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, torch.bfloat16, enabled=speed.autocast):
                logits = runner(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=float(recipe["label_smoothing"]))
                for cb in callbacks:
                    extra = cb.extra_loss(state, images, labels, logits)
                    if extra is not None:
                        loss = loss + extra
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                sums += torch.stack(
                    [loss.detach().double() * labels.numel(), (logits.argmax(1) == labels).sum().double(),
                     torch.tensor(labels.numel(), dtype=torch.float64, device=device)]
                )
            state.step += 1
            state.step_in_epoch = i + 1
            for cb in callbacks:
                cb.on_step_end(state)
            bar.update()
        bar.close()
        loss_sum, correct, seen = all_reduce_sum(sums).tolist()  # the epoch's one host sync
        if not torch.isfinite(torch.tensor(loss_sum)):
            raise TrainingDiverged(
                f"{phase}: the training loss became {loss_sum / max(seen, 1)} in epoch {epoch + 1}; "
                "lower trainer.lr (or check the method's settings) and run again"
            )
        for cb in callbacks:
            cb.on_epoch_end(state)
        acc = _evaluate(model, test_loader, device, speed, recipe)
        result.train_time_s += time.perf_counter() - started
        row = {
            "phase": phase, "epoch": epoch + 1, "lr": lr_at(recipe, epoch), "train_loss": loss_sum / seen,
            "train_acc": 100.0 * correct / seen, "test_acc": acc, "epoch_time_s": time.perf_counter() - started,
        }
        state.metrics = row
        if world.is_main:
            log.info("%s epoch %d/%d  lr %.4g  loss %.4f  train %.2f%%  test %.2f%%  %.1f s", phase, epoch + 1, epochs,
                     row["lr"], row["train_loss"], row["train_acc"], acc, row["epoch_time_s"])
        result.history.append(row)
        result.epochs, result.acc_final = epoch + 1, acc
        result.acc_best = max(result.acc_best, acc)
        if checkpoint is not None and world.is_main:
            ckpt.save_atomic(
                checkpoint,
                {"phase": phase, "fingerprint": fingerprint, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "callbacks": [cb.state_dict() for cb in callbacks],
                 "result": result.__dict__, "step": state.step},
            )
        barrier()
        if on_epoch is not None and world.is_main:
            on_epoch(row)
    return result


def evaluate(model: nn.Module, data: Dataset, recipe: Mapping[str, Any], device: torch.device,
             world: World = World()) -> float:
    """Test top-1 (%) of `model` with the recipe's evaluation batch size, speed settings and batch limit."""
    loader = data.loader("test", int(recipe["eval_batch_size"]), train=False, rank=world.rank, world_size=world.world_size)
    return _evaluate(model, loader, device, Speed.of(recipe, device), recipe)


def _evaluate(model: nn.Module, loader, device: torch.device, speed: Speed, recipe: Mapping[str, Any]) -> float:
    limit = recipe["limit_eval_batches"]
    return top1(model, loader, device, autocast=speed.autocast, channels_last=speed.channels_last,
                limit_batches=None if limit is None else int(limit))


def _restore(path: Path, fingerprint: str, state: TrainState, callbacks: Sequence[Callback], result: FitResult) -> None:
    """Load model, optimizer, callbacks and history from the epoch checkpoint at `path`."""
    payload = ckpt.load(path, key="resume")
    if payload.get("fingerprint") != fingerprint or payload.get("phase") != state.phase:
        raise UserError(
            f"resume: {path} was written by a different configuration or phase; "
            "delete it or run with resume=false"
        )
    ckpt.load_weights(state.model, payload["model"], path, key="resume")
    state.optimizer.load_state_dict(payload["optimizer"])
    for cb, cb_state in zip(callbacks, payload["callbacks"], strict=True):
        cb.load_state_dict(cb_state)
    for key, value in payload["result"].items():
        setattr(result, key, value)
    state.step = int(payload["step"])
