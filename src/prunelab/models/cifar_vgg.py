"""CIFAR VGG with BatchNorm, built from a cfg list (Simonyan & Zisserman 2015, CIFAR variant).

Default: the 13-conv cfg `[64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512,
512, 512]`, conv3x3 (bias on) - BN - ReLU, a global pool of the final 2x2 map and the
512-512-10 classifier (Linear - BN1d - ReLU - Linear) that HRank/HRankPlus use:
313,463,808 MACs, 14,991,946 parameters.  LRPET's variant ends the cfg with "M" and has a
single Linear (`classifier_hidden: []`): the conv stack is the same.
Module names follow HRankPlus (`features.conv0`, `features.norm0`, `features.relu0`, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

VGG16_CFG: list = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


FINAL_POOLS = ("avg", "max")  # model.final_pool: the global pool after the features


@dataclass
class VGGSpec:
    cfg: list = field(default_factory=lambda: list(VGG16_CFG))  # conv widths and "M" (max-pool 2x2)
    num_classes: int = 10
    classifier_hidden: list[int] = field(default_factory=lambda: [512])
    conv_bias: bool = True
    final_pool: str = "avg"  # global pool after the features: "avg" | "max"


class CifarVGG(nn.Module):
    def __init__(self, spec: VGGSpec) -> None:
        super().__init__()
        if spec.final_pool not in FINAL_POOLS:
            raise ValueError(f"final_pool must be 'avg' or 'max', got {spec.final_pool!r}")
        self.spec = spec
        self.features = nn.Sequential()
        c_in = 3
        for i, v in enumerate(spec.cfg):
            if v == "M":
                self.features.add_module(f"pool{i}", nn.MaxPool2d(2, 2))
                continue
            self.features.add_module(f"conv{i}", nn.Conv2d(c_in, int(v), 3, 1, 1, bias=spec.conv_bias))
            self.features.add_module(f"norm{i}", nn.BatchNorm2d(int(v)))
            self.features.add_module(f"relu{i}", nn.ReLU())
            c_in = int(v)
        self.pool = nn.AdaptiveAvgPool2d(1) if spec.final_pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Sequential()
        for j, width in enumerate(spec.classifier_hidden, start=1):
            self.classifier.add_module(f"linear{j}", nn.Linear(c_in, width))
            self.classifier.add_module(f"norm{j}", nn.BatchNorm1d(width))
            self.classifier.add_module(f"relu{j}", nn.ReLU())
            c_in = width
        self.classifier.add_module(f"linear{len(spec.classifier_hidden) + 1}", nn.Linear(c_in, spec.num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    def conv_names(self) -> list[str]:
        """Names of the feature convs in forward order."""
        return [f"features.{n}" for n, m in self.features.named_children() if isinstance(m, nn.Conv2d)]

    def arch(self) -> dict:
        return {"arch": "cifar_vgg", **asdict(self.spec)}
