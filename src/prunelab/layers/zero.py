"""A removed conv that keeps its place: zeros of the conv's output shape, plus its bias.

LRPET exports a dead conv (its BN-folded largest singular value below a threshold) as this
zero branch, never as an identity (LRPET §5.8 in docs/papers/lrpet.md).  It is already its own
inference form.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from prunelab.layers.registry import Layer, register_layer


@register_layer("zero")
class ZeroConv2d(Layer):
    """Outputs zeros of the conv's output shape, plus its bias if it had one; no MACs."""

    def __init__(self, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 bias: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    @classmethod
    def like(cls, conv: nn.Conv2d) -> ZeroConv2d:
        """The zero branch of `conv`, keeping its bias values."""
        layer = cls(conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.bias is not None)
        if conv.bias is not None:
            layer.bias = nn.Parameter(conv.bias.detach().clone())
        return layer

    def spec(self) -> dict[str, Any]:
        return {"out_channels": self.out_channels, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "dilation": list(self.dilation), "bias": self.bias is not None}

    def _out_size(self, size: int, i: int) -> int:
        if self.padding == "same":
            return size
        pad = 0 if self.padding == "valid" else self.padding[i]
        return (size + 2 * pad - self.dilation[i] * (self.kernel_size[i] - 1) - 1) // self.stride[i] + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], self.out_channels, self._out_size(x.shape[-2], 0), self._out_size(x.shape[-1], 1))
        out = x.new_zeros(shape)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def count_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        return 0

    def deploy(self) -> nn.Module:
        return self
