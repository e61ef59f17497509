"""The callback contract of the training loop (docs/design.md, "Callback").

Method-specific training behaviour (LRPET's projection, a threshold ramp, pruning rounds,
distillation) lives in callbacks, never as special cases inside the loop.  Every hook is a
no-op by default; a callback overrides only what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TrainState:
    """What the loop exposes to callbacks.  `model` is the unwrapped module (no DDP/compile)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    epoch: int = 0  # 0-based epoch being run
    epochs: int = 0  # total epochs of this phase
    step: int = 0  # optimizer steps taken so far in this phase (global)
    step_in_epoch: int = 0  # steps taken so far in the current epoch
    steps_per_epoch: int = 0
    phase: str = "finetune"  # the stage's name: "baseline", "finetune", "scratch" or a method's own
    metrics: dict[str, Any] = field(default_factory=dict)  # last epoch's history row
    stop: bool = False  # set by a callback to end the stage after the current epoch (early stop)


class Callback:
    """Base class: override the hooks you need."""

    def on_fit_start(self, state: TrainState) -> None:
        """Once, before the first epoch (also when resuming), before the model is compiled: forward hooks
        registered here (e.g. a `models.features.FeatureTap`) are traced by `torch.compile`."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Before the first step of `state.epoch`."""

    def extra_loss(
        self, state: TrainState, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor | None:
        """A term added to the classification loss of this step (e.g. distillation)."""
        return None

    def on_after_backward(self, state: TrainState) -> None:
        """After the backward pass, before the optimizer step (e.g. mask gradients in `state.model`)."""

    def on_step_end(self, state: TrainState) -> None:
        """After each optimizer step."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After the last step of an epoch, before the epoch's evaluation and checkpoint.

        Setting `state.stop = True` here (or in any hook of the epoch) ends the stage after
        this epoch's evaluation and checkpoint; a resumed run does not train it again.
        """

    def on_fit_end(self, state: TrainState) -> None:
        """Once, after the stage's last epoch (paired with `on_fit_start`: e.g. remove hooks)."""

    def state_dict(self) -> dict[str, Any]:
        """State saved in each epoch checkpoint, so a resumed run continues identically."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
