"""`method=cst`: pruned filters rebuilt as cheap spatial transformations of kept templates.

Miles & Mikolajczyk, "Reconstructing Pruned Filters using Cheap Spatial Transformations", ICCV 2023
Workshops (arXiv:2110.12844); docs/papers/spatial_transform.md.  Training is "generalised pruning" (§2.5):

    prepare   every ungrouped k x k conv (k > 1; 1x1 too with `method.pointwise`) except the first becomes a
              `CSTConv2d` with all its filters templates (the same function); the classifier stays dense.
    stage     one stage (from scratch by default, `method.from_dense=true` from the dense baseline) with
              the `TemplatePruning` callback: after epoch e of the ramp the globally pruned fraction of the
              CST layers' filters is rate * min(1, e / ramp_epochs) (`ramp_epochs=0`: all at once before
              training); the filters of lowest saliency among the current templates go, never below
              `min_templates` per layer; pruning is monotone and the template mapping is frozen after the ramp.
    finalize  every layer is compacted (the unused rows dropped; logits checked unchanged) and counted with
              the corrected cost formulas of the spec (§3).

Saliency (our reading of §2.5, `method.saliency`): magnitude_centered s_n = mean|W_n| - the mean of that
over the layer's current templates (default: v1's per-layer centring, which evens out per-layer rates);
magnitude (no centring); taylor, (sum over the filter of w * dL/dw)^2 summed over the epoch's steps
(first-order Taylor; the template's gradient includes its children's).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from prunelab.budget import Target, fewest
from prunelab.errors import UserError
from prunelab.layers.cst import CSTConv2d
from prunelab.measure import count
from prunelab.methods.base import Context, Method, register
from prunelab.models.features import exact_surgery
from prunelab.train.callbacks import Callback, TrainState
from prunelab.train.stage import ParamGroup

SALIENCIES = ("magnitude_centered", "magnitude", "taylor")
REFITS = ("lstsq", "ones")
TRANSFORM_PARAMS = ("scale", "angle", "theta")
NON_DEFAULT_TARGET = {"ramp_epochs": 40, "transform_init": "lstsq", "transform_decay": False, "pointwise": False}


def cst_layers(model: nn.Module) -> dict[str, CSTConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, CSTConv2d)}


def pruned_fraction(layers: dict[str, CSTConv2d]) -> float:
    """Fraction of the layers' filters rebuilt from templates."""
    total = sum(m.out_channels for m in layers.values())
    return sum(m.out_channels - m.num_templates for m in layers.values()) / max(total, 1)


def replaceable(model: nn.Module, pointwise: bool = False) -> list[str]:
    """The ungrouped convs CST rebuilds: all but the first conv, k x k with k > 1 unless `pointwise`."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return [n for n, m in convs[1:] if m.groups == 1 and (pointwise or max(m.kernel_size) > 1)]


def compact_all(model: nn.Module) -> nn.Module:
    """`model` with every CST layer in its compact (deploy) form."""
    for name, layer in cst_layers(model).items():
        model.set_submodule(name, layer.compact())
    return model


def compacted(model: nn.Module) -> nn.Module:
    """A compact copy of `model` (what is counted)."""
    return compact_all(copy.deepcopy(model))


def magnitude(layer: CSTConv2d) -> torch.Tensor:
    """mean |W_n| of every output's own row (training form: row n is filter n)."""
    return layer.weight.detach().abs().flatten(1).mean(1)


def saliencies(layer: CSTConv2d, how: str, taylor: torch.Tensor | None = None) -> torch.Tensor:
    """Scores of the layer's outputs (only the current templates' are compared; see the module docstring)."""
    if how == "taylor":
        return taylor.clone() if taylor is not None else torch.zeros(layer.out_channels, device=layer.weight.device)
    score = magnitude(layer)
    if how == "magnitude_centered":
        score = score - score[layer.templates].mean()
    return score


def uniform_templates(n: int, rate: float, min_templates: int) -> int:
    """M = max(min_templates, N - round(rate N)) (the profile's uniform allocation; spec §3)."""
    return min(n, max(min_templates, n - round(rate * n)))


def global_keep(layers: list[CSTConv2d], scores: list[torch.Tensor], prune: int, min_templates: int) -> list[torch.Tensor]:
    """Template masks after pruning the `prune` current templates of lowest score over all layers, keeping
    at least `min_templates` in each (fewer are pruned when every layer is at its floor)."""
    keep = [layer.templates.clone() for layer in layers]
    candidates = [(float(s[i]), li, int(i)) for li, (layer, s) in enumerate(zip(layers, scores, strict=True))
                  for i in layer.templates.nonzero().flatten()]
    left = [int(k.sum()) - min_templates for k in keep]
    for _, li, i in sorted(candidates):
        if prune <= 0:
            break
        if left[li] > 0:
            keep[li][i] = False
            left[li] -= 1
            prune -= 1
    return keep


class TemplatePruning(Callback):
    """The pruning ramp of `method=cst` (module docstring); the template mapping lives in the layers' buffers,
    so checkpoints carry it and a resumed run continues from it."""

    def __init__(self, rate: float, ramp_epochs: int, min_templates: int, saliency: str = "magnitude_centered",
                 refit: str = "lstsq", target: Target | None = None,
                 cost: Callable[[nn.Module], float] | None = None) -> None:
        self.layers: dict[str, CSTConv2d] = {}  # the model's CST layers, found at fit start
        self.rate, self.ramp, self.min_templates = rate, ramp_epochs, min_templates
        self.saliency, self.refit = saliency, refit
        self.taylor: dict[str, torch.Tensor] = {}
        self.target, self.cost = target, cost  # with a budget: the ramp aims at the cost (`prune_to_cost`)
        self.model: nn.Module | None = None

    def fraction(self, epochs_done: int) -> float:
        """The global pruned fraction the ramp asks for after `epochs_done` epochs."""
        return self.rate if self.ramp == 0 else self.rate * min(1.0, epochs_done / self.ramp)

    def goal(self, epochs_done: int) -> float:
        """With a budget F: the cost (a fraction of the dense model's) the ramp asks for after `epochs_done`
        epochs, 1 - (1 - F) min(1, e / ramp_epochs): linear in the cost, F at the end of the ramp."""
        share = 1.0 if self.ramp == 0 else min(1.0, epochs_done / self.ramp)
        return 1 - (1 - self.target.fraction) * share

    def _scores(self) -> list[torch.Tensor]:
        return [saliencies(m, self.saliency, self.taylor.get(n)) for n, m in self.layers.items()]

    def cost_after(self, prune: int, scores: list[torch.Tensor]) -> float:
        """The compacted cost if the `prune` templates of lowest `scores` went (on a copy; transformations not
        refitted)."""
        trial = copy.deepcopy(self.model)
        layers = [trial.get_submodule(n) for n in self.layers]
        for layer, keep in zip(layers, global_keep(layers, scores, prune, self.min_templates), strict=True):
            if not torch.equal(keep, layer.templates):
                layer.reassign(keep, "ones")
        return self.cost(trial)

    @torch.no_grad()
    def prune_to_cost(self, goal: float) -> None:
        """Prune globally (lowest saliency first) the fewest templates that bring the compacted cost to `goal`,
        by bisection on their number; all that may go when even that does not reach it (the floor, checked at
        fit start for the final goal)."""
        layers = list(self.layers.values())
        high = sum(m.num_templates - self.min_templates for m in layers)
        if self.cost(self.model) <= goal or high <= 0:
            return
        scores = self._scores()
        prune = fewest(0, high, lambda count: self.cost_after(count, scores) <= goal)  # at most all that may go
        for layer, keep in zip(layers, global_keep(layers, scores, prune, self.min_templates), strict=True):
            if not torch.equal(keep, layer.templates):
                layer.reassign(keep, self.refit)

    @torch.no_grad()
    def prune_to(self, fraction: float) -> None:
        """Prune globally until `fraction` of all the layers' filters are rebuilt from templates."""
        layers = list(self.layers.values())
        total = sum(m.out_channels for m in layers)
        prune = round(fraction * total) - sum(m.out_channels - m.num_templates for m in layers)
        if prune > 0:
            for layer, keep in zip(layers, global_keep(layers, self._scores(), prune, self.min_templates), strict=True):
                if not torch.equal(keep, layer.templates):
                    layer.reassign(keep, self.refit)

    def on_fit_start(self, state: TrainState) -> None:
        self.layers, self.model = cst_layers(state.model), state.model
        if self.target is not None:
            floor = self.cost_after(sum(m.num_templates for m in self.layers.values()), self._scores())
            if floor > self.target.fraction:
                raise UserError(f"budget.{self.target.cost}={self.target.fraction:g} is below cst's floor: with "
                                f"method.min_templates={self.min_templates} templates in every layer the model keeps "
                                f"{floor:.4f} of the dense {self.target.cost}; ask for at least {floor:.4f}")
        if self.ramp == 0:
            self.step(0)

    def step(self, epochs_done: int) -> None:
        """The ramp's pruning after `epochs_done` epochs: to a cost with a budget, else to a filter fraction."""
        if self.target is not None:
            self.prune_to_cost(self.goal(epochs_done))
        else:
            self.prune_to(self.fraction(epochs_done))

    def on_after_backward(self, state: TrainState) -> None:
        if self.saliency != "taylor" or state.epoch >= self.ramp:
            return
        for name, layer in self.layers.items():
            if layer.weight.grad is not None:
                first_order = (layer.weight.detach() * layer.weight.grad).flatten(1).sum(1).square()
                self.taylor[name] = self.taylor.get(name, 0) + first_order.float()

    def on_epoch_end(self, state: TrainState) -> None:
        done = state.epoch + 1
        if done <= self.ramp:
            self.step(done)
            self.taylor.clear()


@register("cst")
class CheapSpatialTransforms(Method):
    """Generalised pruning with template-and-transform layers (module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.rate = float(cfg.rate)
        self.family, self.saliency = str(cfg.family), str(cfg.saliency)
        self.refit, self.path = str(cfg.transform_init), str(cfg.path)
        self.trains_from_scratch = not bool(cfg.from_dense)
        self.names: list[str] = []
        self.budget_met = ""  # with a budget: "macs<=0.5", the ramp's goal instead of the rate

    @property
    def target(self) -> str:
        parts = [self.budget_met or f"rate={self.rate:g}", f"G={int(self.cfg.groups)}",
                 f"minT={int(self.cfg.min_templates)}"]
        parts += [f"family={self.family}"] if self.family != "scalar" else []
        parts += [f"saliency={self.saliency}"] if self.saliency != "magnitude_centered" else []
        parts += ["from_dense"] if not self.trains_from_scratch else []
        parts += [f"{key}={self.cfg[key]}" for key, default in NON_DEFAULT_TARGET.items() if self.cfg[key] != default]
        return "; ".join(parts)

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        groups, floor = int(self.cfg.groups), int(self.cfg.min_templates)
        self.dense_cost = count(model, tuple(ctx.data.input_shape))
        self.names = replaceable(model, bool(self.cfg.pointwise))
        if not self.names:
            raise UserError(f"method=cst: {type(model).__name__} has no conv to rebuild (all but the first "
                            "ungrouped k x k conv; method.pointwise=true adds 1x1 convs)")
        for name in self.names:
            conv = model.get_submodule(name)
            if conv.in_channels % groups:
                raise UserError(f"method.groups={groups} does not divide the {conv.in_channels} input channels of "
                                f"{name}: choose a divisor of every layer's input width (e.g. 1 or 2)")
            if floor > conv.out_channels:
                raise UserError(f"method.min_templates={floor} exceeds the {conv.out_channels} filters of {name}: "
                                f"choose at most {conv.out_channels}")
            model.set_submodule(name, CSTConv2d.like(conv, groups, self.family, self.path).train(conv.training))
        ctx.extra.update(cst_layers=len(self.names))
        return model

    def callbacks(self, ctx: Context) -> list[Callback]:
        target = getattr(ctx, "budget", None)
        cost = None
        if target is not None:
            self.budget_met, shape = f"{target.cost}<={target.fraction:g}", tuple(ctx.data.input_shape)
            cost = lambda m: getattr(count(compacted(m), shape), target.cost) / getattr(self.dense_cost,  # noqa: E731
                                                                                       target.cost)
        return [TemplatePruning(self.rate, int(self.cfg.ramp_epochs), int(self.cfg.min_templates), self.saliency,
                                self.refit, target, cost)]

    def param_groups(self, model: nn.Module) -> list[ParamGroup]:
        """The transformations (with `method.transform_decay`'s weight decay: none by default, our choice) and the rest."""
        transforms = [getattr(m, p) for m in cst_layers(model).values() for p in TRANSFORM_PARAMS if hasattr(m, p)]
        ids = {id(p) for p in transforms}
        rest = [p for p in model.parameters() if id(p) not in ids]
        decay = None if bool(self.cfg.transform_decay) else 0.0
        return [ParamGroup(rest), ParamGroup(transforms, weight_decay=decay)]

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Compact every layer (checked by `exact_surgery`) and record the templates each layer kept."""
        layers = cst_layers(model)
        ctx.extra.update(templates={n: m.num_templates for n, m in layers.items()},
                         pruned_fraction=pruned_fraction(layers))

        model, ctx.extra["compaction_error"] = exact_surgery(model, tuple(ctx.data.input_shape), compact_all,
                                                             "compacting the CST layers")
        if self.budget_met:
            met = pruned_fraction(layers)
            ctx.extra["budget"] = {"cost": ctx.budget.cost, "budget": ctx.budget.fraction,
                                   "knob": "templates (global ramp to the cost)", "value": met,
                                   "achieved": None, "tolerance": ctx.budget.tolerance}  # set by the final check
        return model

    @torch.no_grad()
    def anticipate(self, model: nn.Module, ctx: Context) -> nn.Module:
        """The uniform allocation the profile prices: M = max(min_templates, N - round(rate N)) templates of
        highest magnitude per layer (training allocates globally, so its counts differ)."""
        for layer in cst_layers(model).values():
            m = uniform_templates(layer.out_channels, self.rate, int(self.cfg.min_templates))
            keep = torch.zeros(layer.out_channels, dtype=torch.bool, device=layer.weight.device)
            keep[magnitude(layer).argsort(descending=True)[:m]] = True
            layer.reassign(keep, self.refit)
        return model

    def profile_extra(self, ctx: Context) -> dict[str, Any]:
        return {"cst_layers": len(self.names), "allocation": "uniform"}
