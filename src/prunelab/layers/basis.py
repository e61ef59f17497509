"""A conv split into an orthonormal basis and scaled singular directions (basis pruning, docs/papers/basis_pruning.md §2).

A conv weight W (Co x Ci x kh x kw, groups = 1) as the matrix M = W.reshape(Co, D), D = Ci kh kw,
has the thin SVD M = U diag(sigma) Vh with r = min(Co, D).  `BasisConv2d` computes the same conv
as two layers (§2.3):

    basis    a kh x kw conv Ci -> r whose filters are the rows of Vh (orthonormal), with the
             conv's stride, padding and dilation; frozen
    scaling  `BasisScalingConv`: a 1x1 conv r -> Co with kernel U diag(s * sigma * mask) and the
             conv's bias; sigma and U are fixed buffers, the scaling factors s (init 1) train

so at s = 1 the pair is the conv (float64-tested).  Pruning basis i is `mask[i] = 0`, exactly the
same function as deleting filter i of `basis` and input i of `scaling` (§2.5); the in and out
channels never change.  `export()` removes the pruned bases physically and returns the cheaper of
(§2.11): the pair with r' kept bases, a `LowRankConv2d` of r'(D + Co) weights, or the merged conv of
Co D weights, W' = U_k diag(s_k sigma_k) Vh_k; both compute exactly what the masked layer does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.layers.lowrank import LowRankConv2d, conv_geometry
from prunelab.layers.matrix import conv_matrix, shape_groups, thin_svd
from prunelab.layers.registry import Layer, register_layer


class BasisScalingConv(nn.Module):
    """The 1x1 conv r -> Co with kernel U diag(s * sigma * mask) (+ bias); only `scale` (s) is a parameter."""

    def __init__(self, rank: int, out_channels: int, bias: bool = False) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(rank))
        self.register_buffer("sigma", torch.ones(rank))
        self.register_buffer("vectors", torch.zeros(out_channels, rank))  # U: one column per basis
        self.register_buffer("mask", torch.ones(rank))  # 1 kept, 0 pruned
        self.register_buffer("bias", torch.zeros(out_channels) if bias else None)

    def effective(self) -> torch.Tensor:
        """s * sigma * mask: the singular values the layer applies."""
        return self.scale * self.sigma * self.mask

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        kernel = (self.vectors * self.effective())[:, :, None, None]
        return F.conv2d(z, kernel.to(z.dtype), None if self.bias is None else self.bias.to(z.dtype))


@register_layer("basis")
class BasisConv2d(Layer):
    """A conv as frozen orthonormal basis filters + trainable scaling factors (module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, rank: int, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, bias: bool = False, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.basis = nn.Conv2d(in_channels, rank, kernel_size, stride, padding, dilation, bias=False,
                               padding_mode=padding_mode)
        self.scaling = BasisScalingConv(rank, out_channels, bias)

    @classmethod
    def like(cls, conv: nn.Conv2d) -> BasisConv2d:
        """An (uninitialised) full-rank layer with `conv`'s geometry, on its device and dtype."""
        if conv.groups != 1:
            raise ValueError("BasisConv2d decomposes ungrouped convs only")
        rank = min(conv.out_channels, conv.weight[0].numel())
        return cls(**conv_geometry(conv), rank=rank).to(conv.weight.device, conv.weight.dtype)

    @property
    def rank(self) -> int:
        return self.basis.out_channels

    @property
    def kept(self) -> int:
        return int(self.scaling.mask.sum())

    def spec(self) -> dict[str, Any]:
        b = self.basis
        return {
            "in_channels": b.in_channels, "out_channels": self.scaling.vectors.shape[0],
            "kernel_size": list(b.kernel_size), "rank": self.rank, "stride": list(b.stride),
            "padding": b.padding if isinstance(b.padding, str) else list(b.padding), "dilation": list(b.dilation),
            "bias": self.scaling.bias is not None, "padding_mode": b.padding_mode,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling(self.basis(x))

    def weights(self) -> tuple[int, int]:
        """(weights of the pair with the kept bases, r'(D + Co); weights of the merged conv, Co D)."""
        d, co = self.basis.weight[0].numel(), self.scaling.vectors.shape[0]
        return self.kept * (d + co), co * d

    def count_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        """MACs of the pair with the kept bases: r'(D + Co) Ho Wo (the 1x1 conv runs at the output size)."""
        return self.weights()[0] * output.shape[-2] * output.shape[-1]

    @torch.no_grad()
    def export(self, merge: bool = True) -> nn.Module:
        """The kept bases as a `LowRankConv2d` pair, or (with `merge`, when cheaper) one conv of the original shape."""
        kept = self.scaling.mask.nonzero().flatten()
        basis = self.basis.weight[kept]
        mix = self.scaling.vectors[:, kept] * self.scaling.effective()[kept]
        pair_weights, merged_weights = self.weights()
        geometry = {k: v for k, v in self.spec().items() if k != "rank"}
        if merge and merged_weights <= pair_weights:
            conv = nn.Conv2d(**geometry).to(basis.device, basis.dtype)
            conv.weight.copy_((mix @ basis.flatten(1)).reshape_as(conv.weight))
            out = conv
        else:
            out = LowRankConv2d(**geometry, rank=len(kept)).to(basis.device, basis.dtype)
            out.basis.weight.copy_(basis)
            out.mix.weight.copy_(mix[:, :, None, None])
            conv = out.mix
        if self.scaling.bias is not None:
            conv.bias.copy_(self.scaling.bias)
        return out

    def deploy(self) -> nn.Module:
        out = self.export()
        return out.deploy() if isinstance(out, Layer) else out


@torch.no_grad()
def decompose(model: nn.Module, names: list[str], dtype: torch.dtype = torch.float64) -> nn.Module:
    """Replace each conv named in `names` by its full-rank `BasisConv2d`, in place; SVDs batched per
    weight shape in `dtype`, results cast to the model's dtype."""
    convs = {n: model.get_submodule(n) for n in names}
    for group in shape_groups(convs):
        u, s, vh = thin_svd(torch.stack([conv_matrix(convs[n]) for n in group]), dtype)
        for i, name in enumerate(group):
            conv = convs[name]
            layer = BasisConv2d.like(conv)
            layer.basis.weight.copy_(vh[i].reshape_as(layer.basis.weight))
            layer.scaling.sigma.copy_(s[i])
            layer.scaling.vectors.copy_(u[i])
            if conv.bias is not None:
                layer.scaling.bias.copy_(conv.bias)
            model.set_submodule(name, layer)
    return model


def basis_layers(model: nn.Module) -> dict[str, BasisConv2d]:
    """{name: layer} of every `BasisConv2d` in `model`, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, BasisConv2d)}


def export_all(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every `BasisConv2d` of `model` by its `export(merge)` form, in place."""
    for name, layer in basis_layers(model).items():
        model.set_submodule(name, layer.export(merge))
    return model


def keep_top(layer: BasisConv2d, k: int) -> None:
    """Keep the `k` bases of largest effective singular value |s sigma| (ties: lower index), mask the rest."""
    order = torch.argsort(layer.scaling.effective().abs().detach().cpu(), descending=True, stable=True)
    mask = torch.zeros_like(layer.scaling.mask)
    mask[order[:k].to(mask.device)] = 1
    layer.scaling.mask.copy_(mask)


def masks(model: nn.Module) -> Mapping[str, torch.Tensor]:
    """{layer name: its mask} of every basis layer (the pruning state)."""
    return {n: m.scaling.mask for n, m in basis_layers(model).items()}
