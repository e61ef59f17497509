"""Optimizer and learning-rate schedule of a trainer recipe (conf/trainer/*.yaml).

`optimizer: sgd | adam | adamw` (momentum and nesterov for SGD, betas and eps for Adam/AdamW),
over the stage's parameter groups (train/stage.py), each with its own weight decay and lr scale.
The schedule is a pure function of fractional epoch t = epoch + step / steps_per_epoch,
evaluated every step (so warm-up is smooth and resuming needs no scheduler state); a group's
lr is the schedule's value times its `lr_scale`:

    multistep: lr * gamma ** #{m in milestones : m <= epoch}
    cosine:    lr * (1 + cos(pi * (t - w) / (E - w))) / 2
    warm-up:   both are multiplied by t / w while t < w  (w = warmup_epochs)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from prunelab.train.stage import ParamGroup

SCHEDULES = ("multistep", "cosine")
OPTIMIZERS = ("sgd", "adam", "adamw")


def check_recipe(recipe: Mapping[str, Any]) -> None:
    """Reject recipe values that would fail later or silently do nothing (the rules of `validate.RECIPE`)."""
    from prunelab.validate import RECIPE, check_node  # imported here: validate reads this module's names

    check_node(recipe, RECIPE, "trainer")


def build_optimizer(groups: Sequence[ParamGroup], recipe: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The recipe's optimizer over `groups`; each torch param group keeps its `lr_scale` for the schedule."""
    decay = float(recipe["weight_decay"])
    torch_groups = [
        {"params": g.params, "weight_decay": decay if g.weight_decay is None else float(g.weight_decay),
         "lr_scale": float(g.lr_scale)}
        for g in groups
    ]
    lr = float(recipe["lr"])
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(torch_groups, lr=lr, momentum=float(recipe["momentum"]),
                               nesterov=bool(recipe["nesterov"]), weight_decay=decay)
    adam = torch.optim.Adam if recipe["optimizer"] == "adam" else torch.optim.AdamW
    return adam(torch_groups, lr=lr, betas=tuple(float(b) for b in recipe["betas"]), eps=float(recipe["eps"]),
                weight_decay=decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every param group the schedule's `lr` times its own `lr_scale`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


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
