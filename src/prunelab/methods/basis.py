"""`method=basis` and `method=double`: basis scaling and (double) pruning for transfer learning.

Wong, Kashyap, Moradi, "Basis Scaling and Double Pruning for Efficient Inference in Network-Based
Transfer Learning", Pattern Recognition Letters 2024 (arXiv:2108.02893); docs/papers/basis_pruning.md.
The full text was not available: the steps below marked (choice) are ours, each a config key.

    prepare   every ungrouped Conv2d of the (transferred) model becomes a full-rank `BasisConv2d`:
              frozen orthonormal basis filters + scaling factors s = 1, so the network is unchanged
              (§2.2-2.3; batched float64 SVD).  Grouped (depthwise) convs stay and are counted as
              unprunable (§2.10); Linear layers are not decomposed (§2.9).  `method.keep` starts
              from the k largest singular values per layer instead (pricing a budget, or a
              truncated-SVD start); `criterion=energy` keeps, per layer, the fewest bases holding
              `method.energy` of the squared singular values (a data-free, one-shot ablation, §2.6).
    stage     "basis": only the scaling factors (no weight decay) and the classifier train, with the
              method's Adam recipe; every other parameter is frozen and BatchNorm stays in eval mode
              (§2.4, §2.8).  `PruningRounds` (methods/rounds.py): `reference_epochs`, then rounds of
              `epochs_per_round`; after each, score the kept bases (taylor: (s dL/ds)^2 over
              `scoring.batches` batches; magnitude: |s sigma|, v1, with `l1` on s), prune the lowest
              `fraction` of the remaining bases over all layers (keeping `min_keep` per layer) and
              stop when validation accuracy falls more than `tolerance` points below the unpruned
              reference, keeping the last round inside it (§2.7).
    finalize  each layer becomes its cheaper exact form: the pair of its kept bases or the merged
              conv of the original shape (§2.11).  The record's counts are the exported model's,
              against the undecomposed model with the same head; `extra` adds the decomposed-only
              counts (every layer as a pair), the kept bases per layer and every round's numbers.

`double` holds a channel pruner under `method.pruner` (default `taylor_gates`, methods/channel_gates.py:
trainable channel gates, Taylor-scored rounds, no weight fine-tuning), runs it and its stages first,
removes its channels, then decomposes and basis-prunes the smaller network (§3.4).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prunelab.budget import Target
from prunelab.errors import UserError
from prunelab.layers.basis import basis_layers, decompose, export_all, keep_top
from prunelab.measure import count
from prunelab.methods.base import Composite, Context, Method, register
from prunelab.methods.lrpet import SVD_DTYPES
from prunelab.methods.rounds import (
    CRITERIA, PruningRounds, Unit, head_parameters, needs_validation, record_rounds, rounds_stage, schedule_of,
)
from prunelab.train.callbacks import Callback, TrainState
from prunelab.train.stage import ParamGroup, Stage

BASIS_CRITERIA = (*CRITERIA, "energy")


def decomposable(model: nn.Module) -> tuple[list[str], list[str]]:
    """(ungrouped Conv2d names, grouped Conv2d names) of `model`, in module order."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return [n for n, m in convs if m.groups == 1], [n for n, m in convs if m.groups != 1]


def energy_rank(sigma: torch.Tensor, energy: float) -> int:
    """The fewest leading singular values whose squares hold `energy` of the total (at least 1)."""
    share = sigma.double().square().cumsum(0) / sigma.double().square().sum().clamp_min(1e-300)
    return max(1, int((share < energy - 1e-12).sum()) + 1)


def exported_cost(model: nn.Module, input_shape: tuple[int, ...], merge: bool = True) -> dict[str, int]:
    """Parameters and MACs of a copy of `model` with every basis layer exported (`merge`: best of pair/conv)."""
    cost = count(export_all(copy.deepcopy(model), merge), input_shape)
    return {"params": cost.params, "params_no_bn": cost.params_no_bn, "macs": cost.macs}


class ScaleL1(Callback):
    """lambda * sum |s| over the kept scaling factors (v1's sparsity penalty, §2.6)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def extra_loss(self, state: TrainState, images, labels, logits) -> torch.Tensor:
        layers = basis_layers(state.model).values()
        return self.weight * sum((m.scaling.scale * m.scaling.mask).abs().sum() for m in layers)


@register("basis")
class BasisPruning(Method):
    """Basis scaling and pruning (module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.criterion = str(cfg.criterion)
        self.schedule = schedule_of(cfg)
        self.dtype = SVD_DTYPES[str(cfg.svd_dtype)]
        self.rounds: PruningRounds | None = None

    @property
    def target(self) -> str:
        if self.criterion == "energy":
            return f"energy={float(self.cfg.energy):g}"
        keep = "" if self.cfg.keep is None else f"; keep={self.cfg.keep}"
        return f"{self.criterion}; q={self.schedule.fraction:g}; tol={self.schedule.tolerance:g}{keep}"

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        if self.criterion != "energy" and self.schedule.max_rounds:
            needs_validation(ctx, f"method={self.cfg.name}")
        return self.decompose(model, ctx)

    def decompose(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Every ungrouped conv as a full-rank basis layer, then `keep` / the energy rule (module docstring)."""
        names, grouped = decomposable(model)
        if not names:
            raise UserError(f"model {ctx.model_name} has no ungrouped Conv2d to decompose: basis pruning needs "
                            "groups == 1 convolutions; choose another model=")
        shape = tuple(ctx.data.input_shape)
        ctx.extra.update(
            criterion=self.criterion, decomposed_layers=len(names), unprunable_layers=len(grouped),
            unprunable_layer_names=grouped,
        )
        model = decompose(model, names, self.dtype)
        ctx.extra.update({f"full_rank_{k}": v for k, v in exported_cost(model, shape, merge=False).items()})
        for layer in basis_layers(model).values():
            keep = self.cfg.keep
            if self.criterion == "energy":
                keep_top(layer, energy_rank(layer.scaling.sigma, float(self.cfg.energy)))
            elif keep is not None:
                keep_top(layer, min(layer.rank, int(keep) if isinstance(keep, int) else max(1, round(keep * layer.rank))))
        return model

    def param_groups(self, model: nn.Module) -> list[ParamGroup]:
        """The scaling factors without weight decay, and the classifier with the recipe's."""
        scales = [m.scaling.scale for m in basis_layers(model).values()]
        return [ParamGroup(scales, weight_decay=0.0), ParamGroup(head_parameters(model))]

    def units(self, model: nn.Module) -> dict[str, Unit]:
        return {n: Unit(m.scaling.scale, m.scaling.mask, m.scaling.sigma) for n, m in basis_layers(model).items()}

    def basis_stage(self, ctx: Context, setup=None, reference=lambda: None) -> Stage:
        """The stage that trains the scales and the head, in pruning rounds unless the criterion is one-shot."""
        l1 = [ScaleL1(float(self.cfg.l1))] if float(self.cfg.l1) else []
        cost = lambda m: exported_cost(m, tuple(ctx.data.input_shape))  # noqa: E731
        stage, self.rounds = rounds_stage("basis", ctx, self.cfg, self.schedule, self.criterion, self.param_groups,
                                          self.units, cost, l1, setup, reference)
        return stage

    def stages(self, ctx: Context) -> list[Stage]:
        return [self.basis_stage(ctx)]

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        layers = basis_layers(model)
        shape = tuple(ctx.data.input_shape)
        ctx.extra.update({f"decomposed_{k}": v for k, v in exported_cost(model, shape, merge=False).items()})
        ctx.extra.update(
            kept_bases={n: m.kept for n, m in layers.items()}, ranks={n: m.rank for n, m in layers.items()},
            merged_layers=sum(m.weights()[1] <= m.weights()[0] for m in layers.values()),
        )
        record_rounds(self.rounds, ctx.extra)
        return export_all(model)

    def profile_extra(self, ctx: Context) -> dict[str, Any]:
        keys = ("full_rank_params", "full_rank_macs", "decomposed_params", "decomposed_macs")
        out = {k: ctx.extra[k] for k in keys if k in ctx.extra}
        out["note"] = ("full_rank_* is the decomposed network before pruning: more than the dense model; "
                       "params/macs are the export, each layer as the cheaper of its basis pair and the merged conv")
        return out


@register("double")
class DoublePruning(Composite, BasisPruning):
    """A channel pruner (`method.pruner`), its stages, then basis pruning of its output (§3.4)."""

    def inner_context(self, ctx: Context) -> Context:
        """The pruner's context: its own extra, the run's trainer for `pruner_epochs` epochs (its fine-tuning, if
        it has one; 0 = none, as frozen-weight channel pruning, §3.4) and its share of a budget (`budget_split`)."""
        trainer = OmegaConf.merge(ctx.trainer, {"epochs": int(self.cfg.pruner_epochs)})
        return replace(super().inner_context(ctx), trainer=trainer, budget=self.budget_split(ctx)[0])

    def budget_split(self, ctx: Context) -> tuple[Target | None, Target | None]:
        """(the pruner's, basis pruning's) budgets: with a budget F and `budget_share` s, the pruner stops at
        1 - s (1 - F) of the dense cost, and basis pruning at F of the dense cost (the rest of the reduction)."""
        if ctx.budget is None:
            return None, None
        full, share = ctx.budget, float(self.cfg.budget_share)
        pruner = replace(full, fraction=1 - share * (1 - full.fraction))
        return pruner, replace(full, reference=float(getattr(self.dense_cost, full.cost)))

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        if self.criterion != "energy" and self.schedule.max_rounds:
            needs_validation(ctx, f"method={self.cfg.name}")
        self.dense_cost = count(model, tuple(ctx.data.input_shape))
        return self.inner.prepare(model, self.inner_context(ctx))

    def stages(self, ctx: Context) -> list[Stage]:
        inner = self.inner_context(ctx)
        setup = lambda model: self.decompose(self.inner.finalize(model, inner), ctx)  # noqa: E731
        stages = self.inner.stages(inner)
        reference = lambda: getattr(getattr(self.inner, "rounds", None), "reference", None)  # noqa: E731
        basis = replace(ctx, budget=self.budget_split(ctx)[1])
        return [*stages, self.basis_stage(basis, setup=setup, reference=reference)]

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Basis pruning's export; the reference is the pruner's unpruned model when it measured one."""
        model = BasisPruning.finalize(self, model, ctx)
        pruner = ctx.extra.get(self.inner_key, {})
        if "acc_reference" in pruner:
            ctx.extra["basis_acc_reference"] = ctx.extra.get("acc_reference")
            ctx.extra["acc_reference"] = pruner["acc_reference"]
        return model

    @property
    def own_target(self) -> str:
        return BasisPruning.target.fget(self)
