"""The two-conv low-rank layer and the truncated-SVD factorisation that fills it.

A conv of rank r is `LowRankConv2d` = a k x k conv with r filters (`basis`, with the conv's
stride, padding and dilation) followed by a 1x1 conv (`mix`, carrying the bias).  Its deploy
form is the same pair as plain convs.  `factorise` replaces convs of a model by their rank-r
truncated SVD, split by square roots (LRPET §2.6 in docs/papers/lrpet.md):

    M = W.reshape(Cout, Cin k k) ~ U_r diag(s_r) Vh_r,   basis = sqrt(s_r) Vh_r,   mix = U_r sqrt(s_r)

which is exact when rank(M) <= r (e.g. after LRPET's projection).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import nn

from prunelab.layers.matrix import conv_matrix, shape_groups, thin_svd
from prunelab.layers.registry import Layer, register_layer
from prunelab.layers.zero import ZeroConv2d


def conv_geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """The structure of an ungrouped Conv2d as constructor arguments (JSON-able)."""
    return {
        "in_channels": conv.in_channels, "out_channels": conv.out_channels, "kernel_size": list(conv.kernel_size),
        "stride": list(conv.stride), "padding": conv.padding if isinstance(conv.padding, str) else list(conv.padding),
        "dilation": list(conv.dilation), "bias": conv.bias is not None, "padding_mode": conv.padding_mode,
    }


@register_layer("lowrank")
class LowRankConv2d(Layer):
    """A rank-r conv: `basis` (k x k, r filters, the conv's stride/padding/dilation) then `mix` (1x1, bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, rank: int, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, bias: bool = False, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.basis = nn.Conv2d(in_channels, rank, kernel_size, stride, padding, dilation, bias=False,
                               padding_mode=padding_mode)
        self.mix = nn.Conv2d(rank, out_channels, 1, bias=bias)

    @classmethod
    def like(cls, conv: nn.Conv2d, rank: int) -> LowRankConv2d:
        """A freshly initialised rank-`rank` layer with `conv`'s geometry, on its device and dtype."""
        if conv.groups != 1:
            raise ValueError("LowRankConv2d factorises ungrouped convs only")
        return cls(**conv_geometry(conv), rank=rank).to(conv.weight.device, conv.weight.dtype)

    @property
    def rank(self) -> int:
        return self.basis.out_channels

    def spec(self) -> dict[str, Any]:
        b = self.basis
        return {
            "in_channels": b.in_channels, "out_channels": self.mix.out_channels, "kernel_size": list(b.kernel_size),
            "rank": self.rank, "stride": list(b.stride),
            "padding": b.padding if isinstance(b.padding, str) else list(b.padding), "dilation": list(b.dilation),
            "bias": self.mix.bias is not None, "padding_mode": b.padding_mode,
        }

    def dense_weight(self) -> torch.Tensor:
        """The equivalent single-conv weight mix @ basis (Cout x Cin x k x k)."""
        return torch.einsum("or,rikl->oikl", self.mix.weight[:, :, 0, 0], self.basis.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.basis(x))

    def deploy(self) -> nn.Module:
        """The same two convs as plain modules (`basis`, `mix`): the pair is the cheap inference form."""
        return nn.Sequential(OrderedDict(basis=copy.deepcopy(self.basis), mix=copy.deepcopy(self.mix)))


def to_lowrank(model: nn.Module, ranks: Mapping[str, int]) -> nn.Module:
    """Replace each conv named in `ranks` by a (freshly initialised) `LowRankConv2d` of that rank, or
    by `ZeroConv2d` for rank 0; the structure of an exported model (e.g. to count it)."""
    for name, rank in ranks.items():
        conv = model.get_submodule(name)
        model.set_submodule(name, LowRankConv2d.like(conv, rank) if rank > 0 else ZeroConv2d.like(conv))
    return model


@torch.no_grad()
def factorise(
    model: nn.Module, ranks: Mapping[str, int], dead: Collection[str] = (), dtype: torch.dtype = torch.float64
) -> nn.Module:
    """Replace each conv in `ranks` by its rank-r truncated-SVD factorisation, in place (module docstring).

    The bias moves to `mix`.  Convs in `dead` become `ZeroConv2d`.  SVDs are batched per weight
    shape, in `dtype`.
    """
    alive = {n: model.get_submodule(n) for n in ranks if n not in dead}
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for names in shape_groups(alive):
        u, s, vh = thin_svd(torch.stack([conv_matrix(alive[n]) for n in names]), dtype)
        root = s.sqrt()
        for i, n in enumerate(names):
            r = ranks[n]
            factors[n] = (root[i, :r, None] * vh[i, :r], u[i, :, :r] * root[i, None, :r])
    to_lowrank(model, {n: 0 if n in dead else r for n, r in ranks.items()})
    for n, (basis, mix) in factors.items():
        layer, conv = model.get_submodule(n), alive[n]
        layer.basis.weight.copy_(basis.reshape_as(layer.basis.weight))
        layer.mix.weight.copy_(mix.reshape_as(layer.mix.weight))
        if conv.bias is not None:
            layer.mix.bias.copy_(conv.bias)
    return model
