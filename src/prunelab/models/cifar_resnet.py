"""CIFAR ResNets (He et al. 2016, Sec. 4.2): depth 6n+2, three stages of n BasicBlocks.

The shortcut is parameter-free ("option A"): subsample by the stride, then add input
channel i into output channel map[i].  The dense network uses the positional map
map[i] = i + (C_out - C_in) // 2, which is zero padding of (C_out - C_in) / 2 channels on
each side, as in the option-A definition HRank and Li et al. use (and, for unequal pruned
widths, HRankPlus's padding/cropping rule).  Channel surgery replaces the positional map
by an explicit one, so removing channels never misaligns the residual sum.

Every width is part of `ResNetSpec`, so a pruned network is just another spec and
rebuilds from its checkpoint without pickling modules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ResNetSpec:
    """All widths of a CIFAR ResNet.

    stem: output channels of the first conv; stages: residual-stream width per stage;
    mids: inner width (conv1 output) of every block, stage by stage (3n entries);
    shortcut_maps: "s.b" -> output channel of each input channel of that block's shortcut
    (-1 drops it); blocks not listed use the positional option-A map.
    """

    depth: int = 56
    num_classes: int = 10
    stem: int = 16
    stages: list[int] = field(default_factory=lambda: [16, 32, 64])
    mids: list[int] = field(default_factory=list)
    shortcut_maps: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.depth - 2) % 6 != 0 or self.depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 >= 8, got {self.depth}")
        if not self.mids:
            self.mids = [w for w in self.stages for _ in range(self.blocks_per_stage)]
        if len(self.mids) != 3 * self.blocks_per_stage:
            raise ValueError(f"mids needs {3 * self.blocks_per_stage} widths, got {len(self.mids)}")

    @property
    def blocks_per_stage(self) -> int:
        return (self.depth - 2) // 6


def positional_map(c_in: int, c_out: int) -> list[int]:
    """Option-A map: pad (or crop) (c_out - c_in) // 2 channels in front."""
    offset = (c_out - c_in) // 2
    return [i + offset if 0 <= i + offset < c_out else -1 for i in range(c_in)]


class Shortcut(nn.Module):
    """Parameter-free shortcut: `add_to(out, x)` returns out + P(x[:, :, ::s, ::s]).

    P places input channel i at output channel map[i] and zeros elsewhere, by slicing and zero padding when
    the kept inputs are a run of consecutive channels going to consecutive outputs in order (the positional
    option-A map), else by gathering from x with one zero channel appended.  Either way only reads happen
    (no scatter), so exporters see plain Slice/Pad/Gather, and the sum is exactly out[j] + x[i] (or + 0).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, channel_map: list[int]) -> None:
        super().__init__()
        if len(channel_map) != c_in or any(not -1 <= j < c_out for j in channel_map):
            raise ValueError(f"shortcut map must give each of {c_in} inputs an output in [-1, {c_out})")
        kept = [(i, j) for i, j in enumerate(channel_map) if j >= 0]
        if len({j for _, j in kept}) != len(kept):
            raise ValueError("shortcut map sends two inputs to one output channel")
        self.stride = stride
        self.channel_map = list(channel_map)
        self.identity = c_in == c_out and channel_map == list(range(c_in))
        first_in, first_out = kept[0] if kept else (0, 0)
        shifted = all((i, j) == (first_in + k, first_out + k) for k, (i, j) in enumerate(kept))
        # slicing + padding: x[:, lo:lo+n] padded by (before, after) channels; None: gather
        self.slice_pad = (first_in, len(kept), first_out, c_out - first_out - len(kept)) if shifted else None
        source = [c_in] * c_out  # output j reads input channel source[j]; c_in is the appended zero channel
        for i, j in kept:
            source[j] = i
        self.register_buffer("source", torch.tensor(source, dtype=torch.long), persistent=False)

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.identity:
            return out + x
        if self.slice_pad is not None:
            lo, n, before, after = self.slice_pad
            return out + F.pad(x[:, lo:lo + n], (0, 0, 0, 0, before, after))
        return out + F.pad(x, (0, 0, 0, 0, 0, 1)).index_select(1, self.source)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU.  `relu2` sees the post-add map."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int, channel_map: list[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_mid, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = Shortcut(c_in, c_out, stride, channel_map)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.shortcut.add_to(out, x))


class CifarResNet(nn.Module):
    """Stem conv, stages layer1..layer3, global average pool, linear classifier."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.conv1 = nn.Conv2d(3, spec.stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(spec.stem)
        self.relu = nn.ReLU()
        n = spec.blocks_per_stage
        c_in = spec.stem
        for s, c_out in enumerate(spec.stages):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                cmap = spec.shortcut_maps.get(f"{s + 1}.{b}", positional_map(c_in, c_out))
                blocks.append(BasicBlock(c_in, spec.mids[s * n + b], c_out, stride, cmap))
                c_in = c_out
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, spec.num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def blocks(self) -> list[tuple[str, BasicBlock]]:
        """(name, block) of every block in forward order, e.g. ("layer1.0", block)."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, BasicBlock)]

    def arch(self) -> dict:
        return {"arch": "cifar_resnet", **asdict(self.spec)}
