"""The training loop shared by every stage: dense baseline, fine-tuning, training from scratch.

`fit(model, data, stage, ...)` trains the stage's parameter groups (train/stage.py) with its
recipe; everything else is frozen, and frozen BatchNorms stay in eval mode.  Per step: set
each group's scheduled learning rate, forward (bf16 autocast and channels_last on CUDA),
cross-entropy (+ label smoothing) plus the callbacks' extra losses, backward,
`on_after_backward`, optimizer step, `on_step_end`.  Loss and accuracy are summed on the
device: the host synchronises once per epoch, when the epoch's numbers are read (and a
non-finite loss stops the run).  After each epoch: `on_epoch_end`, evaluation (test, and
the validation split when the data has one), an atomic checkpoint; a callback that set
`state.stop` ends the stage there.  Resuming loads that checkpoint and continues; since
data order and augmentation depend only on (seed, epoch), a resumed run ends with the same
numbers as an uninterrupted one.
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

from prunelab.data.base import Dataset, Loader
from prunelab.errors import UserError
from prunelab.measure.accuracy import top1
from prunelab.train import checkpoint as ckpt
from prunelab.train.callbacks import Callback, TrainState
from prunelab.train.distributed import World, all_reduce_sum, barrier, wrap
from prunelab.train.optim import build_optimizer, check_recipe, lr_at, set_lr
from prunelab.train.stage import Stage, frozen_outside, keep_eval

log = logging.getLogger(__name__)
AMP_MODES = ("bf16", "none")  # trainer.amp: bf16 autocast on CUDA, or float32


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def _check_finite(model: nn.Module, phase: str, epoch: int) -> None:
    """Stop like a NaN loss does when a weight or buffer (BatchNorm statistics) is no longer finite."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    flags = torch.stack([torch.isfinite(t).all() for _, t in tensors if t.is_floating_point()]) if tensors else None
    if flags is None or bool(flags.all()):
        return
    bad = next(name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    raise TrainingDiverged(f"{phase}: {bad} holds NaN or inf after epoch {epoch + 1}; lower trainer.lr (or check the "
                           "method's settings) and run again")


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    acc_final: float = 0.0  # test top-1 (%) after the last epoch
    acc_best: float = 0.0  # best epoch (secondary)
    epochs: int = 0
    train_time_s: float = 0.0
    stopped: bool = False  # a callback ended the stage before its last epoch


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
    stage: Stage,
    *,
    device: torch.device,
    seed: int,
    world: World = World(),
    checkpoint: Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train `model` in place for the stage's `recipe["epochs"]` epochs (or until a callback stops it).

    `checkpoint` is written after every epoch (rank 0); with `resume` an existing one is
    loaded first (a finished stage is restored and not trained again).  `fingerprint`
    identifies the configuration: resuming from a checkpoint with another fingerprint or
    stage is refused.  `on_epoch` receives each history row (rank 0).
    """
    recipe, callbacks, phase = stage.recipe, list(stage.callbacks), stage.name
    check_recipe(recipe)
    speed = Speed.of(recipe, device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    groups = stage.groups(model)
    optimizer = build_optimizer(groups, recipe)
    train_loader = data.loader(
        "train", int(recipe["batch_size"]), train=True, seed=seed, rank=world.rank, world_size=world.world_size
    )
    eval_loaders = {
        split: data.loader(split, int(recipe["eval_batch_size"]), train=False, rank=world.rank,
                           world_size=world.world_size)
        for split in ("test", "val") if split == "test" or data.num_val
    }
    epochs = int(recipe["epochs"])
    steps = len(train_loader) if recipe["limit_steps"] is None else min(len(train_loader), int(recipe["limit_steps"]))
    state = TrainState(model, optimizer, device, epochs=epochs, steps_per_epoch=steps, phase=phase)
    result = FitResult()
    if resume and checkpoint is not None and checkpoint.is_file():
        _restore(checkpoint, fingerprint, state, callbacks, result)
        for row in result.history if on_epoch is not None and world.is_main else ():
            on_epoch(row)  # a resumed run's record starts with the epochs it restored
    if result.epochs == epochs or result.stopped:  # finished before (or epochs == 0): nothing to train
        if epochs == 0:
            result.acc_final = result.acc_best = _evaluate(model, eval_loaders["test"], device, speed, recipe)
        return result
    with frozen_outside(model, groups) as frozen_batchnorms:
        for cb in callbacks:
            cb.on_fit_start(state)  # before compiling, so hooks a callback registers are traced
        runner = wrap(model, device, world)
        if speed.compile:  # a fresh compilation per stage: dynamo does not guard on hooks or earlier stages' graphs
            torch._dynamo.reset()
            runner = torch.compile(runner)
        for epoch in range(result.epochs, epochs):
            started = time.perf_counter()
            state.epoch, state.step_in_epoch = epoch, 0
            train_loader.set_epoch(epoch)
            model.train()
            keep_eval(frozen_batchnorms)
            for cb in callbacks:
                cb.on_epoch_start(state)
            sums = _train_epoch(runner, train_loader, steps, state, callbacks, recipe, speed, world)
            loss_sum, correct, seen = all_reduce_sum(sums).tolist()  # the epoch's one host sync
            if not torch.isfinite(torch.tensor(loss_sum)):
                raise TrainingDiverged(
                    f"{phase}: the training loss became {loss_sum / max(seen, 1)} in epoch {epoch + 1}; "
                    "lower trainer.lr (or check the method's settings) and run again"
                )
            for cb in callbacks:
                cb.on_epoch_end(state)
            _check_finite(model, phase, epoch)
            accs = {split: _evaluate(model, loader, device, speed, recipe) for split, loader in eval_loaders.items()}
            result.train_time_s += time.perf_counter() - started
            row = {
                "phase": phase, "epoch": epoch + 1, "lr": lr_at(recipe, epoch), "train_loss": loss_sum / seen,
                "train_acc": 100.0 * correct / seen, "test_acc": accs["test"],
                **({"val_acc": accs["val"]} if "val" in accs else {}), "epoch_time_s": time.perf_counter() - started,
            }
            state.metrics = row
            if world.is_main:
                log.info("%s epoch %d/%d  lr %.4g  loss %.4f  train %.2f%%  test %.2f%%%s  %.1f s", phase, epoch + 1,
                         epochs, row["lr"], row["train_loss"], row["train_acc"], accs["test"],
                         f"  val {accs['val']:.2f}%" if "val" in accs else "", row["epoch_time_s"])
            result.history.append(row)
            result.epochs, result.acc_final = epoch + 1, accs["test"]
            result.acc_best = max(result.acc_best, accs["test"])
            result.stopped = state.stop and epoch + 1 < epochs
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
            if result.stopped:
                if world.is_main:
                    log.info("%s stopped early after epoch %d of %d", phase, epoch + 1, epochs)
                break
        for cb in callbacks:
            cb.on_fit_end(state)
        optimizer.zero_grad(set_to_none=True)  # no stale gradients on the trained model (a teacher later)
    return result


def _train_epoch(runner: nn.Module, loader: Loader, steps: int, state: TrainState, callbacks: Sequence[Callback],
                 recipe: Mapping[str, Any], speed: Speed, world: World) -> torch.Tensor:
    """One epoch of optimizer steps; returns the device-side sums (loss * n, correct, n)."""
    epoch, optimizer, device = state.epoch, state.optimizer, state.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    bar = tqdm(total=steps, desc=f"{state.phase} {epoch + 1}/{state.epochs}", leave=False,
               disable=None if world.is_main else True)
    for i, (images, labels) in enumerate(loader):
        if i >= steps:
            break
        set_lr(optimizer, lr_at(recipe, epoch + i / steps))
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
        for cb in callbacks:
            cb.on_after_backward(state)
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
    return sums


def evaluate(model: nn.Module, data: Dataset, recipe: Mapping[str, Any], device: torch.device,
             world: World = World(), split: str = "test") -> float:
    """Top-1 (%) of `model` on `split` ("test" or "val") with the recipe's evaluation batch size, speed
    settings and batch limit."""
    loader = data.loader(split, int(recipe["eval_batch_size"]), train=False, rank=world.rank, world_size=world.world_size)
    return _evaluate(model, loader, device, Speed.of(recipe, device), recipe)


def _evaluate(model: nn.Module, loader, device: torch.device, speed: Speed, recipe: Mapping[str, Any]) -> float:
    limit = recipe["limit_eval_batches"]
    return top1(model, loader, device, autocast=speed.autocast, channels_last=speed.channels_last,
                limit_batches=None if limit is None else int(limit))


def _restore(path: Path, fingerprint: str, state: TrainState, callbacks: Sequence[Callback], result: FitResult) -> None:
    """Load model, optimizer, callbacks and history from the epoch checkpoint at `path`."""
    payload = ckpt.load(path, key="resume", fix="delete it (the stage starts over) or run with resume=false")
    if payload.get("fingerprint") != fingerprint or payload.get("phase") != state.phase:
        raise UserError(
            f"resume: {path} was written by a different configuration or stage; "
            "delete it or run with resume=false"
        )
    ckpt.load_weights(state.model, payload["model"], path, key="resume")
    state.optimizer.load_state_dict(payload["optimizer"])
    for cb, cb_state in zip(callbacks, payload["callbacks"], strict=True):
        cb.load_state_dict(cb_state)
    for key, value in payload["result"].items():
        setattr(result, key, value)
    state.step = int(payload["step"])
