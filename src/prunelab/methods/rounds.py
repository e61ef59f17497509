"""Iterative pruning of masked scale factors in rounds, selected on the validation split.

Used by basis pruning (units = the bases of every `BasisConv2d`, scale s) and by gate-based
channel pruning (units = the channels of every `GatedBatchNorm2d`, gate g); docs/papers/basis_pruning.md
§2.6-2.7 and §3.4.  A unit is pruned by setting its mask to 0; the structure never changes during
the stage, so checkpoints and resume work as for any stage.

The stage trains `reference_epochs`, then `max_rounds` rounds of `epochs_per_round`.  At the end of
the reference epochs and of every round (`on_epoch_end`):

  1. `acc` = validation accuracy of the model as trained; the first one is the reference (unless
     an earlier stage measured the unpruned model's: double pruning compares with that);
  2. keep a copy of the model's state (the last accepted model);
  3. score the kept units (`Criterion`), prune the lowest `fraction` of the kept units over all
     layers together (global ranking; ties: layer order, then index), never leaving a layer with
     fewer than `min_keep` units;
  4. validation accuracy right after pruning; if it is more than `tolerance` points below the
     reference, restore the copy (undo this round's pruning) and stop the stage.

A stage that runs out of rounds ends with the last round's training.  Every evaluation is
logged in `history` (round, kept units, cost, validation and test accuracy): the test accuracy
is only reported, never used to select.

With a budget (`budget.macs` / `budget.params`, `prunelab.budget.Target`) the budget is the stopping target
instead of the accuracy tolerance: before the first epoch the floor (every layer at `min_keep`) is checked
against it (refused in one line if it does not fit); each round prunes as in 3., and the round whose pruning
brings the exported cost within the budget prunes only the fewest of its units that do (bisection on their
number, lowest scores first); the stage trains that round's epochs, then stops.  Out of rounds before the
budget fits: refused, naming `max_rounds` and `fraction`.

Criteria (higher = more important):

    taylor     mean over `scoring_batches` minibatches (None: one pass over the training split) of
               (s * dL/ds)^2  (first-order Taylor, squared; Molchanov et al. 2019)
    magnitude  |s * m|, m the unit's magnitude (sigma for a basis, 1 for a gate)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prunelab.budget import Target, fewest
from prunelab.data.base import Dataset
from prunelab.errors import UserError
from prunelab.models.features import eval_mode
from prunelab.models.hub import classifier_of
from prunelab.train.callbacks import Callback, TrainState
from prunelab.train.loop import evaluate
from prunelab.train.stage import ParamGroup, Stage

if TYPE_CHECKING:
    from prunelab.methods.base import Context


@dataclass
class Unit:
    """The prunable units of one layer: scale factors, their 0/1 mask and a fixed magnitude per unit."""

    scale: nn.Parameter
    mask: torch.Tensor
    magnitude: torch.Tensor


Units = Callable[[nn.Module], Mapping[str, Unit]]
CRITERIA = ("taylor", "magnitude")


@dataclass(frozen=True)
class Schedule:
    """When and how much to prune; see the module docstring."""

    reference_epochs: int
    epochs_per_round: int
    max_rounds: int
    fraction: float
    min_keep: int
    tolerance: float

    @property
    def epochs(self) -> int:
        return self.reference_epochs + self.max_rounds * self.epochs_per_round

    def round_at(self, epochs_done: int) -> int | None:
        """The round that ends after `epochs_done` epochs (0: the reference), else None."""
        extra = epochs_done - self.reference_epochs
        if extra < 0 or extra % self.epochs_per_round:
            return None
        return extra // self.epochs_per_round


def taylor_scores(model: nn.Module, units: Mapping[str, Unit], batches: list[tuple[torch.Tensor, torch.Tensor]]
                  ) -> dict[str, torch.Tensor]:
    """mean over `batches` of (s * dL/ds)^2 per unit (eval mode; gradients taken for the scales only)."""
    names = list(units)
    sums = {n: torch.zeros_like(units[n].scale, dtype=torch.float64) for n in names}
    with eval_mode(model), torch.enable_grad():
        for images, labels in batches:
            loss = F.cross_entropy(model(images).float(), labels)
            grads = torch.autograd.grad(loss, [units[n].scale for n in names], allow_unused=True)
            for n, g in zip(names, grads, strict=True):
                if g is not None:
                    sums[n] += (units[n].scale.detach() * g).double().square()
    return {n: s / max(len(batches), 1) for n, s in sums.items()}


def magnitude_scores(units: Mapping[str, Unit]) -> dict[str, torch.Tensor]:
    """|s * magnitude| per unit."""
    return {n: (u.scale.detach() * u.magnitude).abs().double() for n, u in units.items()}


def prune_lowest(units: Mapping[str, Unit], scores: Mapping[str, torch.Tensor], fraction: float,
                 min_keep: int, count: int | None = None) -> int:
    """Mask the lowest-scoring `fraction` of the kept units (at least one; or exactly `count`), globally,
    keeping `min_keep` per layer; returns how many were pruned."""
    kept = {n: int(u.mask.sum()) for n, u in units.items()}
    candidates = [(float(scores[n][i]), layer, i) for layer, n in enumerate(units)
                  for i in units[n].mask.nonzero().flatten().tolist()]
    budget = max(1, int(fraction * len(candidates))) if count is None else count
    names, pruned = list(units), 0
    for _, layer, i in sorted(candidates):
        if pruned == budget:
            break
        name = names[layer]
        if kept[name] > min_keep:
            units[name].mask[i] = 0
            kept[name] -= 1
            pruned += 1
    return pruned


class PruningRounds(Callback):
    """The rounds of the module docstring, as a callback of one stage."""

    def __init__(self, units: Units, schedule: Schedule, criterion: str, data: Dataset, recipe: Mapping[str, Any],
                 seed: int, scoring_batches: int | None, cost: Callable[[nn.Module], dict[str, int]],
                 reference: Callable[[], float | None] = lambda: None, target: Target | None = None) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        self.units, self.schedule, self.criterion = units, schedule, criterion
        self.data, self.recipe, self.seed, self.scoring_batches = data, recipe, seed, scoring_batches
        self.cost, self.earlier_reference = cost, reference
        self.reference: float | None = None
        self.history: list[dict[str, Any]] = []
        self.target, self.start, self.fitted = target, None, False

    def on_fit_start(self, state: TrainState) -> None:
        """With a budget: the unpruned cost, and the floor (every layer at `min_keep`) checked against it."""
        if self.target is None:
            return
        model = copy.deepcopy(state.model)
        units = self.units(model)
        for unit in units.values():
            unit.mask.fill_(1)
        self.start = self.target.reference or self.cost(model)[self.target.cost]
        for unit in units.values():
            unit.mask.zero_()
            unit.mask[:self.schedule.min_keep] = 1
        floor = self.cost(model)[self.target.cost] / self.start
        if floor > self.target.fraction:
            raise UserError(f"budget.{self.target.cost}={self.target.fraction:g} is below the floor of the pruning "
                            f"rounds: with method.min_keep={self.schedule.min_keep} units in every layer the model "
                            f"keeps {floor:.4f} of its {self.target.cost}; ask for at least {floor:.4f}")

    def on_fit_end(self, state: TrainState) -> None:
        if self.target is not None and not self.fitted:
            raise UserError(f"budget.{self.target.cost}={self.target.fraction:g} was not reached in "
                            f"method.max_rounds={self.schedule.max_rounds} rounds of method.fraction="
                            f"{self.schedule.fraction:g}: raise either")

    def fraction(self, model: nn.Module) -> float:
        """The exported cost the budget counts, as a fraction of the unpruned model's."""
        return self.cost(model)[self.target.cost] / self.start

    def on_epoch_end(self, state: TrainState) -> None:
        round_ = self.schedule.round_at(state.epoch + 1)
        if round_ is None:
            return
        model = state.model
        acc = self._log(model, round_, "trained")
        if self.reference is None:  # an earlier stage's reference (double pruning), else this first model's
            earlier = self.earlier_reference()
            self.reference = acc if earlier is None else earlier
        if round_ == self.schedule.max_rounds or self.fitted:
            state.stop = self.fitted
            return
        accepted = copy.deepcopy(model.state_dict())
        units = self.units(model)
        scores = self._scores(model, units, round_)
        if self.target is not None:
            self._toward_target(model, units, scores)
            self._log(model, round_ + 1, "pruned")
            return
        if not prune_lowest(units, scores, self.schedule.fraction, self.schedule.min_keep):
            state.stop = True  # every layer is down to min_keep
            return
        if self.reference - self._log(model, round_ + 1, "pruned") > self.schedule.tolerance:
            model.load_state_dict(accepted)
            self.history[-1]["restored"] = True
            state.stop = True

    def _toward_target(self, model: nn.Module, units: Mapping[str, Unit], scores: Mapping[str, torch.Tensor]) -> None:
        """One round's pruning with a budget: the round's share, or the fewest of it that bring the cost within."""
        masks = {name: unit.mask.clone() for name, unit in units.items()}

        def prune(count: int | None) -> int:
            for name, unit in units.items():
                unit.mask.copy_(masks[name])
            return prune_lowest(units, scores, self.schedule.fraction, self.schedule.min_keep, count)

        def fits(count: int) -> bool:
            prune(count)
            return self.fraction(model) <= self.target.fraction

        high = prune(None)  # the round's share
        if self.fraction(model) > self.target.fraction:
            return
        prune(fewest(0, high, fits))
        self.fitted = True

    def _scores(self, model: nn.Module, units: Mapping[str, Unit], round_: int) -> dict[str, torch.Tensor]:
        if self.criterion == "magnitude":
            return magnitude_scores(units)
        loader = self.data.loader("train", int(self.recipe["batch_size"]), train=True, seed=self.seed)
        loader.set_epoch(10_000 + round_)  # a fixed stream per round, apart from the training epochs
        limit = len(loader) if self.scoring_batches is None else self.scoring_batches  # None: one full pass
        batches = [batch for _, batch in zip(range(limit), loader)]
        return taylor_scores(model, units, batches)

    def _log(self, model: nn.Module, round_: int, event: str) -> float:
        """Evaluate on val (selection) and test (report); append a history row; return the val accuracy."""
        val = evaluate(model, self.data, self.recipe, next(model.parameters()).device, split="val")
        test = evaluate(model, self.data, self.recipe, next(model.parameters()).device)
        units = self.units(model)
        self.history.append({
            "round": round_, "event": event, "kept": sum(int(u.mask.sum()) for u in units.values()),
            "units": sum(u.mask.numel() for u in units.values()), "val_acc": val, "test_acc": test,
            **self.cost(model),
        })
        return val

    def state_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "history": self.history, "fitted": self.fitted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reference, self.history = state["reference"], list(state["history"])
        self.fitted = bool(state.get("fitted", False))


def schedule_of(cfg: DictConfig) -> Schedule:
    """The rounds settings of a method config (basis, taylor_gates; their rules: `validate.ROUNDS`)."""
    return Schedule(int(cfg.reference_epochs), int(cfg.epochs_per_round), int(cfg.max_rounds), float(cfg.fraction),
                    int(cfg.min_keep), float(cfg.tolerance))


def scoring_batches(cfg: DictConfig) -> int | None:
    return None if cfg.scoring.batches is None else int(cfg.scoring.batches)


def needs_validation(ctx: Context, key: str) -> None:
    if not ctx.data.num_val:
        raise UserError(f"{key} selects its pruning rounds on a validation split: set dataset.val_images=N "
                        "(N training images are held out; the test split is never used to select)")


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters (the last Linear layer: the new head of a transfer target)."""
    return list(classifier_of(model).parameters())


def rounds_stage(name: str, ctx: Context, cfg: DictConfig, schedule: Schedule, criterion: str,
                 param_groups: Callable[[nn.Module], list[ParamGroup]], units: Units,
                 cost: Callable[[nn.Module], dict[str, int]], callbacks: list[Callback] = (), setup=None,
                 reference: Callable[[], float | None] = lambda: None) -> tuple[Stage, PruningRounds | None]:
    """The stage that trains `param_groups` in pruning rounds (or, without rounds or with a one-shot
    criterion, for the reference epochs only), and its rounds callback."""
    if criterion not in CRITERIA or not schedule.max_rounds:
        recipe = OmegaConf.merge(ctx.trainer, {"epochs": schedule.reference_epochs})
        return Stage(name, recipe, param_groups=param_groups, callbacks=list(callbacks), setup=setup), None
    rounds = PruningRounds(units, schedule, criterion, ctx.data, ctx.trainer, ctx.seed, scoring_batches(cfg), cost,
                           reference, ctx.budget)
    recipe = OmegaConf.merge(ctx.trainer, {"epochs": schedule.epochs})
    return Stage(name, recipe, param_groups=param_groups, callbacks=[*callbacks, rounds], setup=setup), rounds


def record_rounds(rounds: PruningRounds | None, extra: dict[str, Any]) -> None:
    """Every round's numbers and the unpruned reference (test and validation accuracy) into `extra`;
    without rounds the reference is None: no unpruned model was trained, so the record has no base accuracy."""
    if rounds is None or not rounds.history:
        extra["acc_reference"] = None
        return
    reference = next(h for h in rounds.history if h["event"] == "trained")
    extra.update(rounds=rounds.history, acc_reference=reference["test_acc"], val_reference=reference["val_acc"])
    if rounds.target is not None:
        last = rounds.history[-1]
        extra["budget"] = {"cost": rounds.target.cost, "budget": rounds.target.fraction, "knob": "pruning rounds",
                           "value": last["round"], "achieved": last[rounds.target.cost] / rounds.start,
                           "tolerance": rounds.target.tolerance}
