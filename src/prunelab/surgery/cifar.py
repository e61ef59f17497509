"""Exact channel removal for the width-spec models (CIFAR ResNet and VGG).

`groups(model, mode)` lists the prunable channel groups in HRankPlus's compress_rate
order; `prune(model, keep, mode)` returns a new, smaller model of the same class whose
spec holds the new widths, with the kept filters, their BatchNorm parameters and running
statistics, conv biases and the consumers' input slices copied.

ResNet stage outputs:
- mode "shared" (default): one kept set per stage stream, shared by every block's conv2
  and the identity path.  The option-A shortcut becomes an explicit channel map, so the
  residual sums stay aligned and removing channels whose stream is zero is exact.
- mode "independent": each block's conv2 keeps its own set and shortcuts stay
  positional, as HRankPlus does (not function-preserving; fine-tuning absorbs it).
The last stage's stream feeds the classifier and is never pruned (HRankPlus), nor is the
last VGG conv.
"""

from __future__ import annotations

import torch
from torch import nn

from prunelab.models.cifar_resnet import CifarResNet, ResNetSpec, positional_map
from prunelab.models.cifar_vgg import CifarVGG, VGGSpec
from prunelab.surgery.groups import ChannelGroup, Member

STAGE_MODES = ("shared", "independent")


def supports(model: nn.Module) -> bool:
    return isinstance(model, (CifarResNet, CifarVGG))


def groups(model: nn.Module, mode: str = "shared") -> list[ChannelGroup]:
    if isinstance(model, CifarResNet):
        return _resnet_groups(model, mode)
    return _vgg_groups(model)


def prune(model: nn.Module, keep: dict[str, torch.Tensor], mode: str = "shared") -> nn.Module:
    """A new model keeping, for each conv named in `keep`, the listed output channels (others keep all)."""
    keep = {name: idx.sort().values.cpu() for name, idx in keep.items()}
    if isinstance(model, CifarResNet):
        return _prune_resnet(model, keep, mode)
    return _prune_vgg(model, keep)


# ---------------------------------------------------------------- ResNet


def _resnet_groups(model: CifarResNet, mode: str) -> list[ChannelGroup]:
    blocks = model.blocks()
    n = model.spec.blocks_per_stage
    out = [ChannelGroup("conv1", [Member("conv1", "relu")], model.spec.stem, 0, "stem")]
    for s in range(2):  # the last stage feeds the classifier
        members = [Member(f"{name}.conv2", f"{name}.relu2", f"{name}.bn2") for name, _ in blocks[s * n : (s + 1) * n]]
        width = model.spec.stages[s]
        if mode == "shared":
            out.append(ChannelGroup(f"layer{s + 1}", members, width, 1 + s, "stage"))
        else:
            out += [ChannelGroup(m.conv, [m], width, 1 + s, "stage") for m in members]
    out += [
        ChannelGroup(f"{name}.conv1", [Member(f"{name}.conv1", f"{name}.relu1")], block.conv1.out_channels, 3 + i, "inner")
        for i, (name, block) in enumerate(blocks)
    ]
    return out


def _prune_resnet(model: CifarResNet, keep: dict[str, torch.Tensor], mode: str) -> CifarResNet:
    def kept(conv: nn.Conv2d, name: str) -> torch.Tensor:
        return keep.get(name, torch.arange(conv.out_channels))

    stem_keep = kept(model.conv1, "conv1")
    spec = model.spec
    plan = []  # (block, in_keep, mid_keep, out_keep)
    in_keep = stem_keep
    for name, block in model.blocks():
        mid_keep, out_keep = kept(block.conv1, f"{name}.conv1"), kept(block.conv2, f"{name}.conv2")
        plan.append((name, block, in_keep, mid_keep, out_keep))
        in_keep = out_keep
    n = spec.blocks_per_stage
    maps = {}
    for i, (name, block, in_keep, _, out_keep) in enumerate(plan):
        if mode == "independent":
            new_map = positional_map(len(in_keep), len(out_keep))
        else:
            position = {int(c): j for j, c in enumerate(out_keep)}
            new_map = [position.get(block.shortcut.channel_map[int(c)], -1) for c in in_keep]
        if new_map != positional_map(len(in_keep), len(out_keep)):
            maps[f"{i // n + 1}.{i % n}"] = new_map
    new = CifarResNet(
        ResNetSpec(
            depth=spec.depth, num_classes=spec.num_classes, stem=len(stem_keep),
            stages=[len(plan[s * n][4]) for s in range(3)], mids=[len(p[3]) for p in plan], shortcut_maps=maps,
        )
    ).to(model.fc.weight.device, model.fc.weight.dtype)
    _copy_conv(model.conv1, new.conv1, stem_keep, None)
    _copy_bn(model.bn1, new.bn1, stem_keep)
    for (name, block, in_keep, mid_keep, out_keep), (_, fresh) in zip(plan, new.blocks(), strict=True):
        _copy_conv(block.conv1, fresh.conv1, mid_keep, in_keep)
        _copy_bn(block.bn1, fresh.bn1, mid_keep)
        _copy_conv(block.conv2, fresh.conv2, out_keep, mid_keep)
        _copy_bn(block.bn2, fresh.bn2, out_keep)
    _copy_linear(model.fc, new.fc, plan[-1][4])
    return new


# ---------------------------------------------------------------- VGG


def _vgg_groups(model: CifarVGG) -> list[ChannelGroup]:
    convs = model.conv_names()
    modules = dict(model.named_modules())

    def member(name: str) -> Member:
        pool = f"features.pool{int(name.removeprefix('features.conv')) + 1}"  # cfg index of the next entry
        return Member(name, name.replace("conv", "relu"), pooled=pool if pool in modules else None)

    return [ChannelGroup(name, [member(name)], model.get_submodule(name).out_channels, i, "inner")
            for i, name in enumerate(convs[:-1])]


def _prune_vgg(model: CifarVGG, keep: dict[str, torch.Tensor]) -> CifarVGG:
    spec = model.spec
    cfg, kept_sets, in_keep = [], [], None
    for i, v in enumerate(spec.cfg):
        if v == "M":
            cfg.append("M")
            continue
        conv = model.features.get_submodule(f"conv{i}")
        out_keep = keep.get(f"features.conv{i}", torch.arange(conv.out_channels))
        kept_sets.append((i, in_keep, out_keep))
        cfg.append(len(out_keep))
        in_keep = out_keep
    old_linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    new = CifarVGG(VGGSpec(cfg, spec.num_classes, list(spec.classifier_hidden), spec.conv_bias, spec.final_pool))
    new = new.to(old_linears[0].weight.device, old_linears[0].weight.dtype)
    for i, conv_in, out_keep in kept_sets:
        _copy_conv(model.features.get_submodule(f"conv{i}"), new.features.get_submodule(f"conv{i}"), out_keep, conv_in)
        _copy_bn(model.features.get_submodule(f"norm{i}"), new.features.get_submodule(f"norm{i}"), out_keep)
    new_linears = [m for m in new.classifier if isinstance(m, nn.Linear)]
    _copy_linear(old_linears[0], new_linears[0], in_keep)
    for old, fresh in zip(old_linears[1:], new_linears[1:], strict=True):
        fresh.load_state_dict(old.state_dict())
    old_bns = [m for m in model.classifier if isinstance(m, nn.BatchNorm1d)]
    for old, fresh in zip(old_bns, [m for m in new.classifier if isinstance(m, nn.BatchNorm1d)], strict=True):
        fresh.load_state_dict(old.state_dict())
    return new


# ---------------------------------------------------------------- copying


@torch.no_grad()
def _copy_conv(old: nn.Conv2d, new: nn.Conv2d, out_keep: torch.Tensor, in_keep: torch.Tensor | None) -> None:
    weight = old.weight[out_keep.to(old.weight.device)]
    if in_keep is not None:
        weight = weight[:, in_keep.to(old.weight.device)]
    new.weight.copy_(weight)
    if old.bias is not None:
        new.bias.copy_(old.bias[out_keep.to(old.bias.device)])


@torch.no_grad()
def _copy_bn(old: nn.BatchNorm2d, new: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    idx = keep.to(old.weight.device)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new, name).copy_(getattr(old, name)[idx])
    new.num_batches_tracked.copy_(old.num_batches_tracked)


@torch.no_grad()
def _copy_linear(old: nn.Linear, new: nn.Linear, in_keep: torch.Tensor) -> None:
    new.weight.copy_(old.weight[:, in_keep.to(old.weight.device)])
    new.bias.copy_(old.bias)
