"""Optimizer and learning-rate schedule of a trainer recipe (conf/trainer/*.yaml).

The schedule is a pure function of fractional epoch t = epoch + step / steps_per_epoch,
evaluated every step (so warm-up is smooth and resuming needs no scheduler state):

    multistep: lr * gamma ** #{m in milestones : m <= epoch}
    cosine:    lr * (1 + cos(pi * (t - w) / (E - w))) / 2
    warm-up:   both are multiplied by t / w while t < w  (w = warmup_epochs)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prunelab.errors import UserError

SCHEDULES = ("multistep", "cosine")


def check_recipe(recipe: Mapping[str, Any]) -> None:
    """Reject recipe values that would fail later or silently do nothing."""
    if recipe["schedule"] not in SCHEDULES:
        raise UserError(f"unknown trainer.schedule '{recipe['schedule']}': choose one of {', '.join(SCHEDULES)}")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if int(recipe[key]) < (0 if key == "epochs" else 1):
            raise UserError(f"trainer.{key}={recipe[key]} is out of range: use a positive integer")
    if float(recipe["lr"]) <= 0:
        raise UserError(f"trainer.lr={recipe['lr']} must be > 0")
    if not 0 <= float(recipe["label_smoothing"]) < 1:
        raise UserError(f"trainer.label_smoothing={recipe['label_smoothing']} must be in [0, 1)")


def build_optimizer(model: nn.Module, recipe: Mapping[str, Any]) -> torch.optim.SGD:
    """SGD with momentum (optionally Nesterov) and weight decay on every parameter."""
    return torch.optim.SGD(
        model.parameters(),
        lr=float(recipe["lr"]),
        momentum=float(recipe["momentum"]),
        nesterov=bool(recipe["nesterov"]),
        weight_decay=float(recipe["weight_decay"]),
    )


def lr_at(recipe: Mapping[str, Any], t: float) -> float:
    """Learning rate at fractional epoch `t` (see module docstring)."""
    base, epochs, warmup = float(recipe["lr"]), int(recipe["epochs"]), float(recipe["warmup_epochs"])
    if recipe["schedule"] == "multistep":
        lr = base * float(recipe["gamma"]) ** sum(1 for m in recipe["milestones"] if int(m) <= math.floor(t))
    else:
        span = max(epochs - warmup, 1e-12)
        lr = base * 0.5 * (1.0 + math.cos(math.pi * min(max(t - warmup, 0.0), span) / span))
    if t < warmup:
        lr *= t / warmup
    return lr
