"""Physical channel removal (docs/design.md, "surgery/").

`channel_groups(model, input_shape, mode)` lists what can be pruned, in the model's
per-layer rate order; `remove_channels(model, groups, keep, input_shape, mode)` returns
the smaller model keeping `keep[group.name]` (sorted channel indices) of each group.
Width-spec models (CIFAR ResNet, VGG) are rebuilt exactly from a smaller spec; other
backbones are pruned in place through Torch-Pruning's dependency graph.
"""

from __future__ import annotations

import torch
from torch import nn

from prunelab.surgery import cifar, hub
from prunelab.surgery.groups import ChannelGroup, Member, kept_count

STAGE_MODES = cifar.STAGE_MODES


def channel_groups(model: nn.Module, input_shape: tuple[int, ...], mode: str = "shared") -> list[ChannelGroup]:
    if cifar.supports(model):
        return cifar.groups(model, mode)
    return hub.groups(model, input_shape)


def remove_channels(
    model: nn.Module,
    groups: list[ChannelGroup],
    keep: dict[str, torch.Tensor],
    input_shape: tuple[int, ...],
    mode: str = "shared",
) -> nn.Module:
    if cifar.supports(model):
        by_conv = {m.conv: keep[g.name] for g in groups if g.name in keep for m in g.members}
        return cifar.prune(model, by_conv, mode)
    return hub.prune(model, input_shape, {str(g.handle): keep[g.name] for g in groups if g.name in keep})


__all__ = ["STAGE_MODES", "ChannelGroup", "Member", "channel_groups", "kept_count", "remove_channels"]
