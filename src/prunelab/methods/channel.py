"""Structured (filter) pruning with physical channel removal, one-shot from the dense model.

Per prunable group (surgery.groups): score the filters with a criterion, keep the
top k = max(1, int(C * (1 - r))) (equal scores: `method.ties`, see `top_k`), remove the
rest, then fine-tune.  Rates come from a uniform `ratio` or a per-layer `compress_rate` list in
HRankPlus's layout (a list or a string such as "[0.]+[0.15]*2+[0.4]*27").

A group written by several convs (a residual stream) combines its members' scores as
sum_m s_m / mean(s_m): each block weighs equally whatever its scale (our choice; the
sources prune stage outputs per block, see `stage_mode: independent`).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunelab.errors import UserError
from prunelab.measure import count
from prunelab.methods.allocation import fit_budget, global_order, kept_after, removable
from prunelab.methods.base import Context, Method, register
from prunelab.methods.criteria import CRITERIA
from prunelab.models.cifar_vgg import CifarVGG
from prunelab.surgery import ChannelGroup, channel_groups, kept_count, remove_channels

_TERM = re.compile(r"\[\s*([-+0-9.eE]+)\s*\](?:\s*\*\s*(\d+))?")


def parse_rates(value: str | Sequence[float], key: str = "method.compress_rate") -> list[float]:
    """HRankPlus's compress-rate string ("[0.]+[0.18]*29") or a list, as floats in [0, 1)."""
    if isinstance(value, str):
        terms = [t.strip() for t in value.split("+")] if value.strip() else []
        rates: list[float] = []
        for term in terms:
            match = _TERM.fullmatch(term)
            if match is None:
                raise UserError(f"{key}: cannot read '{term}' in '{value}': write terms like [0.15]*2 joined by +")
            rates += [float(match.group(1))] * int(match.group(2) or 1)
    else:
        rates = [float(r) for r in value]
    bad = [r for r in rates if not 0.0 <= r < 1.0]
    if bad:
        raise UserError(f"{key}: rates must lie in [0, 1), got {bad[0]}")
    return rates


TIES = ("high_index", "low_index", "numpy")
SCORING_FEATURES = ("post_add", "pre_add")  # method.scoring.feature: where a ResNet block's conv2 is scored


def top_k(scores: torch.Tensor, k: int, ties: str = "high_index") -> torch.Tensor:
    """Indices of the k largest (float32) scores, ascending.  Among equal scores:

    - "high_index": the higher channel index (the last k of a stable ascending sort);
    - "low_index": the lower one;
    - "numpy": whichever `np.argsort(scores)[C - k:]` keeps, numpy's default (unstable) sort as HRankPlus
      calls it on its float32 ranks.  Its tie order depends on the numpy build and CPU: the generic introsort
      sorts up to 16 elements by insertion (stable, so "high_index" agrees there) and partitions longer
      arrays; builds that dispatch argsort to SIMD sorts (AVX2, AVX-512) order ties otherwise at any length.
    """
    values = scores.detach().cpu().float()
    if ties == "high_index":
        order = torch.argsort(values, stable=True)[len(values) - k:]
    elif ties == "numpy":
        order = torch.from_numpy(np.argsort(values.numpy())[len(values) - k:])
    else:
        order = torch.argsort(values, descending=True, stable=True)[:k]
    return order.sort().values


@torch.no_grad()
def reinit_after_pruning(model: nn.Module) -> None:
    """The pruned model as HRankPlus's fine-tuning code builds it: only the kept filters' conv weights come
    from the dense model; every BatchNorm starts afresh (weight 1, bias 0, running statistics reset) and, for
    VGG, so do the conv biases and the classifier (PyTorch's default init, from the run's seeded generator)."""
    vgg = isinstance(model, CifarVGG)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.reset_parameters()
        elif vgg and isinstance(module, nn.Linear):
            module.reset_parameters()
        elif vgg and isinstance(module, nn.Conv2d) and module.bias is not None:
            bound = 1 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.bias, -bound, bound)


def group_score(group: ChannelGroup, scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """One score per channel of the group (see module docstring for several members)."""
    parts = [scores[m.conv].detach().cpu().double() for m in group.members]
    if len(parts) == 1:
        return parts[0]
    return sum(p / p.mean().clamp_min(1e-12) for p in parts)


@register("channel")
class ChannelPruning(Method):
    """Criterion-ranked filter pruning (L1, random and the criteria of the energy-aware paper)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        if cfg.allocation == "global" and (cfg.compress_rate is not None or int(cfg.round_to) > 1):
            raise UserError("method.allocation=global chooses every layer's width itself: give "
                            "method.compress_rate=null and method.round_to=1")
        self.budget_met = ""  # with allocation=global and a budget: "macs<=0.5" once prepare has met it

    @property
    def label(self) -> str:
        return str(self.cfg.criterion)

    @property
    def target(self) -> str:
        if self.cfg.compress_rate is not None:
            rates = self.cfg.compress_rate
            text = rates if isinstance(rates, str) else "[" + ",".join(f"{float(r):g}" for r in rates) + "]"
            return text + self._rounding
        size = self.budget_met or f"ratio={float(self.cfg.ratio):g}"
        allocation = "; global" if self.cfg.allocation == "global" else ""
        return size + ("+stages" if self.cfg.stage_outputs else "") + self._rounding + allocation

    @property
    def _rounding(self) -> str:
        return f"; round_to={int(self.cfg.round_to)}" if int(self.cfg.round_to) > 1 else ""

    def global_keep(self, model: nn.Module, groups: list[ChannelGroup], todo: list[ChannelGroup],
                    scores: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        """`allocation=global` (methods/allocation.py): filters ranked across the groups by normalised score; the
        fewest removals that meet the run's budget (`ctx.budget`), else `ratio` of all prunable filters."""
        shape, mode = ctx.data.input_shape, str(self.cfg.stage_mode)
        order = global_order({g.name: group_score(g, scores) for g in todo})
        channels = {g.name: g.channels for g in todo}
        as_tensors = lambda kept: {k: torch.tensor(v) for k, v in kept.items()}  # noqa: E731
        if ctx.budget is None:
            n = round(float(self.cfg.ratio) * sum(channels.values()))
            return as_tensors(kept_after(order, channels, n))
        target, dense = ctx.budget, count(model, shape)

        def cost(kept: dict[str, list[int]]) -> float:
            pruned = remove_channels(copy.deepcopy(model), groups, as_tensors(kept), shape, mode)
            return getattr(count(pruned, shape), target.cost) / getattr(dense, target.cost)

        n, achieved = fit_budget(order, channels, cost, target.fraction)
        if n > removable(channels):
            raise UserError(f"budget.{target.cost}={target.fraction:g} is below the floor of {self.label} with "
                            f"allocation=global: one filter left in every pruned layer keeps {achieved:.4f} of the "
                            f"dense {target.cost}; ask for at least {achieved:.4f}")
        if target.fraction - achieved > target.tolerance:
            raise UserError(f"budget.{target.cost}={target.fraction:g}: the closest global allocation gets from "
                            f"below is {achieved:.4f}, more than budget.tolerance={target.tolerance:g} under it")
        self.budget_met = f"{target.cost}<={target.fraction:g}"
        ctx.extra["budget"] = {"cost": target.cost, "budget": target.fraction, "knob": "removed filters (global)",
                               "value": n, "achieved": achieved, "tolerance": target.tolerance}
        return as_tensors(kept_after(order, channels, n))

    @property
    def pruned_kinds(self) -> set[str]:
        """The kinds of group a uniform ratio (or the global allocation) prunes."""
        return {"inner", "stem", "stage"} if self.cfg.stage_outputs else {"inner"}

    def rates(self, groups: list[ChannelGroup]) -> list[float]:
        """One rate per slot of the model's layout."""
        slots = max(g.slot for g in groups) + 1
        if self.cfg.compress_rate is not None:
            rates = parse_rates(self.cfg.compress_rate)
            if len(rates) != slots:
                raise UserError(
                    f"method.compress_rate has {len(rates)} rates but this model takes {slots} "
                    f"(groups in order: {', '.join(g.name for g in groups[:4])}, ...)"
                )
            return rates
        by_slot = [0.0] * slots
        for g in groups:
            if g.kind in self.pruned_kinds:
                by_slot[g.slot] = float(self.cfg.ratio)
        return by_slot

    def scoring_batches(self, ctx: Context) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first `scoring.images` training images (train augmentation if `scoring.augment`)."""
        sc = self.cfg.scoring
        loader = ctx.data.loader("train", int(sc.batch_size), train=bool(sc.augment), seed=ctx.seed)
        loader.set_epoch(0)
        batches, left = [], int(sc.images)
        for images, labels in loader:
            if left <= 0:
                break
            batches.append((images[:left], labels[:left]))
            left -= len(labels)
        return batches

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        mode = str(self.cfg.stage_mode)
        shape = ctx.data.input_shape
        groups = channel_groups(model, shape, mode)
        rates = self.rates(groups)
        globally = self.cfg.allocation == "global"
        todo = [g for g in groups if (g.kind in self.pruned_kinds if globally else rates[g.slot] > 0)]
        if not todo:
            return model
        pre_add, pooled = self.cfg.scoring.feature == "pre_add", bool(self.cfg.scoring.vgg_pool)
        members = [replace(m, feature=m.pre_add) if pre_add and m.pre_add else
                   replace(m, feature=m.pooled) if pooled and m.pooled else m for g in todo for m in g.members]
        score = CRITERIA[str(self.cfg.criterion)]
        batches = self.scoring_batches(ctx) if score.needs_data else []
        scores = score(model, members, batches, ctx.seed)
        if globally:
            keep = self.global_keep(model, groups, todo, scores, ctx)
        else:
            round_to = int(self.cfg.round_to)
            keep = {g.name: top_k(group_score(g, scores), kept_count(g.channels, rates[g.slot], round_to),
                                  str(self.cfg.ties)) for g in todo}
        ctx.extra.update({"criterion": str(self.cfg.criterion), "stage_mode": mode,
                          "kept_widths": {g.name: len(keep[g.name]) for g in todo}})
        if self.cfg.ties == "numpy":  # its tie order is the build's: name the build
            ctx.extra["ties"] = f"numpy {np.__version__}"
        pruned = remove_channels(model, groups, keep, shape, mode)
        if self.cfg.reinit_after_pruning:
            reinit_after_pruning(pruned)
        return pruned
