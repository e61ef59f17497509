"""A stage of a run (docs/design.md, "Stage"): what trains, with which recipe and callbacks.

A method returns its stages (`Method.stages(ctx)`); the pipeline runs them in order, each with
its own optimizer, schedule and atomic epoch checkpoint (named by the stage), so `resume=true`
continues inside any stage.  Within a stage:

- `param_groups(model)` lists the parameters that train, each group with its own lr scale
  (the schedule's lr times `lr_scale`) and weight decay (None: the recipe's).  Every other
  parameter is frozen for the stage (`requires_grad=False`), and a BatchNorm whose affine
  parameters are frozen stays in eval mode for the whole stage, so its running statistics do not move.
  Without `param_groups` every parameter trains, with the recipe's decay rule
  (`decay_bn_and_bias`).
- `setup(model)`, if given, is a structural change made when the stage begins (e.g. a
  decomposition after an inner method's fine-tuning).  It must be a deterministic function of
  the incoming model: a resumed run replays it before loading the stage's checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunelab.train.callbacks import Callback


@dataclass
class ParamGroup:
    """Parameters that train together: lr = schedule(t) * lr_scale; weight_decay None = the recipe's."""

    params: list[nn.Parameter]
    lr_scale: float = 1.0
    weight_decay: float | None = None


@dataclass
class Stage:
    """One training stage: a name (history phase and checkpoint key), a trainer recipe and what trains."""

    name: str
    recipe: Mapping[str, Any]
    param_groups: Callable[[nn.Module], list[ParamGroup]] | None = None
    callbacks: Sequence[Callback] = field(default_factory=list)
    setup: Callable[[nn.Module], nn.Module] | None = None

    def groups(self, model: nn.Module) -> list[ParamGroup]:
        """The stage's non-empty parameter groups for `model` (checked to be disjoint)."""
        groups = self.param_groups(model) if self.param_groups is not None else recipe_groups(model, self.recipe)
        groups = [g for g in groups if g.params]
        seen: set[int] = set()
        for g in groups:
            ids = {id(p) for p in g.params}
            if len(ids) != len(g.params) or ids & seen:
                raise ValueError(f"stage {self.name}: a parameter appears twice in its param_groups")
            seen |= ids
        return groups


def recipe_groups(model: nn.Module, recipe: Mapping[str, Any]) -> list[ParamGroup]:
    """Every parameter, in `model.parameters()` order; `decay_bn_and_bias: false` puts BatchNorm
    parameters and biases into a second group without weight decay."""
    params = list(model.parameters())
    if recipe.get("decay_bn_and_bias", True):
        return [ParamGroup(params)]
    plain = no_decay_parameters(model)
    return [ParamGroup([p for p in params if id(p) not in plain]),
            ParamGroup([p for p in params if id(p) in plain], weight_decay=0.0)]


def no_decay_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters that conventionally take no weight decay: BatchNorm weights and biases, all biases."""
    out = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, _BatchNorm) or name == "bias":
                out.add(id(p))
    return out


def frozen_batchnorms(model: nn.Module, trained: set[int]) -> list[_BatchNorm]:
    """BatchNorm layers with affine parameters, neither of which is in `trained` (ids).  Other
    parameters a BatchNorm subclass may own (a channel gate) do not unfreeze its statistics."""
    out = []
    for m in model.modules():
        affine = [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]
        if isinstance(m, _BatchNorm) and affine and not any(id(p) in trained for p in affine):
            out.append(m)
    return out


@contextmanager
def frozen_outside(model: nn.Module, groups: Sequence[ParamGroup]) -> Iterator[list[_BatchNorm]]:
    """Freeze every parameter of `model` outside `groups` for the duration; yields the frozen BatchNorms.

    `requires_grad` flags are restored on exit.  The caller keeps the yielded BatchNorms in eval
    mode (`keep_eval`) after every `model.train()`.
    """
    trained = {id(p) for g in groups for p in g.params}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(id(p) in trained)
    try:
        yield frozen_batchnorms(model, trained)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def keep_eval(batchnorms: Sequence[_BatchNorm]) -> None:
    """Put frozen BatchNorms back into eval mode (call after `model.train()`)."""
    for bn in batchnorms:
        bn.eval()
