"""`method=taylor_gates`: channel pruning with trainable gates and frozen weights (docs/papers/basis_pruning.md §3.4).

The "existing algorithm" of double pruning in the spirit of the authors' channel-scaling precursor:
no weight is fine-tuned.

    prepare   the BatchNorm after every prunable conv whose channels are not shared with another
              layer (a block's inner conv, every VGG conv but the last; `surgery.channel_groups`
              groups of one member) becomes a `GatedBatchNorm2d`: BN(x) * g per channel, g = 1, so
              the network is unchanged.  Residual streams are not gated (choice: their channels
              are summed with other layers', §5.13).
    stage     "gates": only the gates (no weight decay) and the classifier train, BatchNorm in eval
              mode; `PruningRounds` prunes the lowest `fraction` of the open gates by Taylor score
              (g dL/dg)^2 (or |g|), keeping `min_keep` channels per layer, until validation accuracy
              falls more than `tolerance` below the reference (methods/rounds.py).
    finalize  each gate folds into its BatchNorm exactly (gamma*g, beta*g), and the closed channels
              are removed physically (`surgery.remove_channels`): the same function, fewer channels.
"""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig
from torch import nn

from prunelab.errors import UserError
from prunelab.layers.gate import GatedBatchNorm2d
from prunelab.measure import count
from prunelab.methods.base import Context, Method, register
from prunelab.methods.rounds import (
    PruningRounds, Unit, head_parameters, needs_validation, record_rounds, rounds_stage, schedule_of,
)
from prunelab.models.structure import conv_bn_pairs
from prunelab.surgery import channel_groups, remove_channels
from prunelab.train.stage import ParamGroup, Stage


def gates(model: nn.Module) -> dict[str, GatedBatchNorm2d]:
    """{name: layer} of every gated BatchNorm of `model`."""
    return {n: m for n, m in model.named_modules() if isinstance(m, GatedBatchNorm2d)}


def gated_groups(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """{group name: BatchNorm name} of the channel groups with a single conv followed directly by a BatchNorm."""
    bns = conv_bn_pairs(model, input_shape)
    return {g.name: bns[g.members[0].conv] for g in channel_groups(model, input_shape)
            if len(g.members) == 1 and g.members[0].conv in bns}


@register("taylor_gates")
class TaylorGates(Method):
    """Gate-based channel pruning without weight fine-tuning (module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.criterion = str(cfg.criterion)
        self.schedule = schedule_of(cfg)
        self.rounds: PruningRounds | None = None

    @property
    def target(self) -> str:
        return f"{self.criterion}; q={self.schedule.fraction:g}; tol={self.schedule.tolerance:g}"

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        if self.schedule.max_rounds:
            needs_validation(ctx, f"method.{self.cfg.name}")
        groups = gated_groups(model, tuple(ctx.data.input_shape))
        if not groups:
            raise UserError(f"model {ctx.model_name} has no conv whose channels can be gated alone "
                            f"(a conv followed by a BatchNorm, channels not shared): choose another model=")
        for bn in groups.values():
            model.set_submodule(bn, GatedBatchNorm2d.like(model.get_submodule(bn)))
        ctx.extra.update(gated_layers=len(groups))
        return model

    def param_groups(self, model: nn.Module) -> list[ParamGroup]:
        return [ParamGroup([g.gate for g in gates(model).values()], weight_decay=0.0),
                ParamGroup(head_parameters(model))]

    def units(self, model: nn.Module) -> dict[str, Unit]:
        return {n: Unit(g.gate, g.mask, torch.ones_like(g.mask)) for n, g in gates(model).items()}

    def stages(self, ctx: Context) -> list[Stage]:
        shape = tuple(ctx.data.input_shape)
        stage, self.rounds = rounds_stage("gates", ctx, self.cfg, self.schedule, self.criterion, self.param_groups,
                                          self.units, lambda m: self._cost(m, shape))
        return [stage]

    def _cost(self, model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
        cost = count(self.remove_closed(copy.deepcopy(model), shape), shape)
        return {"params": cost.params, "params_no_bn": cost.params_no_bn, "macs": cost.macs}

    def remove_closed(self, model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
        """Fold every gate into its BatchNorm and remove the closed channels (exact).  The removal runs with
        autograd on: Torch-Pruning traces a hub model's dependency graph through it."""
        kept = {}
        for name, gate in gates(model).items():
            idx = gate.mask.nonzero().flatten().cpu()
            if len(idx) < gate.num_features:
                kept[name] = idx
            with torch.no_grad():
                model.set_submodule(name, gate.deploy())
        if not kept:
            return model
        by_bn = {bn: group for group, bn in gated_groups(model, shape).items()}
        return remove_channels(model, channel_groups(model, shape), {by_bn[n]: i for n, i in kept.items()}, shape)

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        layers = gates(model)
        ctx.extra.update(kept_channels={n: int(g.mask.sum()) for n, g in layers.items()},
                         channels={n: g.num_features for n, g in layers.items()})
        record_rounds(self.rounds, ctx.extra)
        return self.remove_closed(model, tuple(ctx.data.input_shape))
