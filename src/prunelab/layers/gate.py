"""A BatchNorm with a trainable gate per channel: the unit of gate-based channel pruning.

`GatedBatchNorm2d` computes BN(x) * (g * mask) per channel, with gates g initialised to 1 (the
network is unchanged) and a 0/1 mask for pruned channels (docs/papers/basis_pruning.md §3.4).  It
keeps the BatchNorm's parameter and buffer names, so channel surgery treats it as the BN it
replaces.  Its deploy form folds the gate into the affine parameters, exactly:

    gamma' = gamma * g * mask,  beta' = beta * g * mask
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunelab.layers.registry import Layer, register_layer


@register_layer("gated_bn")
class GatedBatchNorm2d(nn.BatchNorm2d, Layer):
    """BN(x) * (gate * mask) per channel (module docstring); gate is a parameter, mask a buffer."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.gate = nn.Parameter(torch.ones(num_features))
        self.register_buffer("mask", torch.ones(num_features))

    @classmethod
    def like(cls, bn: nn.BatchNorm2d) -> GatedBatchNorm2d:
        """`bn` with open gates: the same parameters and statistics, on its device and dtype."""
        if not bn.affine:
            raise ValueError("a gate folds into the BatchNorm's affine parameters: affine=False is not supported")
        out = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        out = out.to(bn.weight.device, bn.weight.dtype)
        out.load_state_dict(bn.state_dict(), strict=False)
        return out

    def spec(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "track_running_stats": self.track_running_stats}

    def open_gates(self) -> torch.Tensor:
        return self.gate * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.open_gates()[None, :, None, None].to(x.dtype)

    @torch.no_grad()
    def deploy(self) -> nn.Module:
        if not self.affine:
            raise ValueError("a gate folds into the BatchNorm's affine parameters: affine=False is not supported")
        bn = nn.BatchNorm2d(**self.spec()).to(self.weight.device, self.weight.dtype)
        bn.load_state_dict({k: v for k, v in self.state_dict().items() if k not in ("gate", "mask")})
        bn.weight.mul_(self.open_gates())
        bn.bias.mul_(self.open_gates())
        return bn.train(self.training)
