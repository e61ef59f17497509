"""A layer over-parameterized into consecutive linear layers, and its exact contraction (docs/papers/linear_overparam.md §2).

`ExpandedConv2d`: a conv W (Co x Ci x k x k) as three convs with no bias, BatchNorm or activation
between them (ExpandNets' "CL" form, expansion ratio E):

    a  1x1, Ci -> M = E Ci          b  k x k, M -> N = E Co, the conv's stride, padding, dilation
    c  1x1, N -> Co (+ the conv's bias)

A bias-free 1x1 conv acts per pixel and maps 0 to 0, so it commutes with padding and striding and
the block is the single conv (§2.3)

    W[o, i, u, v] = sum_{n, m} C[o, n] B[n, m, u, v] A[m, i]

`ExpandedLinear`: Linear(Ci -> E Ci) -> Linear(E Ci -> E Co) -> Linear(E Co -> Co, bias), W = W3 W2 W1
(§2.4).  `contract()` (= `deploy()`) returns the plain layer, computed in float64.

`init_expansion` fills the factors so that the block reproduces the layer it replaces (§2.5):

    pinv         A ~ N(0, 1/Ci), C ~ N(0, 1/N), B_uv = C+ W_uv A+ + s [(I - C+ C) R_uv + R'_uv (I - A A+)]
                 (+: Moore-Penrose pseudo-inverse, R, R' standard normal, s = `noise` x std(C+ W A+)):
                 C B_uv A = W_uv exactly, and the extra width receives gradient
    orthonormal_noise  A with orthonormal columns, C with orthonormal rows (so A+ = A^T, C+ = C^T) and B as
                 for pinv, null-space noise included: exact, trainable extra width, and well conditioned (A^T A = I
                 at any E, where a Gaussian A is near-singular at E = 1 and ill-conditioned at small E)
    orthonormal  the same A and C with B_uv = C^T W_uv A^T and no noise: also exact, but the gradients of A and
                 C never leave their initial subspaces (the degenerate ablation)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunelab.layers.lowrank import conv_geometry
from prunelab.layers.registry import Layer, register_layer

INITS = ("pinv", "orthonormal_noise", "orthonormal")


@register_layer("expanded_conv")
class ExpandedConv2d(Layer):
    """A conv as 1x1 -> k x k -> 1x1 linear convs (module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, mid_in: int, mid_out: int,
                 stride: Any = 1, padding: Any = 0, dilation: Any = 1, bias: bool = False,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        self.a = nn.Conv2d(in_channels, mid_in, 1, bias=False)
        self.b = nn.Conv2d(mid_in, mid_out, kernel_size, stride, padding, dilation, bias=False,
                           padding_mode=padding_mode)
        self.c = nn.Conv2d(mid_out, out_channels, 1, bias=bias)

    @classmethod
    def like(cls, conv: nn.Conv2d, expand: int) -> ExpandedConv2d:
        """An uninitialised block replacing `conv` with expansion ratio `expand`, on its device and dtype."""
        if conv.groups != 1:
            raise ValueError("ExpandedConv2d expands ungrouped convs only")
        mids = {"mid_in": expand * conv.in_channels, "mid_out": expand * conv.out_channels}
        return cls(**conv_geometry(conv), **mids).to(conv.weight.device, conv.weight.dtype)

    def spec(self) -> dict[str, Any]:
        b = self.b
        return {
            "in_channels": self.a.in_channels, "out_channels": self.c.out_channels, "kernel_size": list(b.kernel_size),
            "mid_in": b.in_channels, "mid_out": b.out_channels, "stride": list(b.stride),
            "padding": b.padding if isinstance(b.padding, str) else list(b.padding), "dilation": list(b.dilation),
            "bias": self.c.bias is not None, "padding_mode": b.padding_mode,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x)))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A: M x Ci, B: N x M x k x k, C: Co x N) as matrices and the k x k kernel."""
        return self.factor_views(self.a.weight, self.b.weight, self.c.weight)

    @staticmethod
    def factor_views(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tensors shaped like a's, b's and c's weights (e.g. their gradients) viewed as `factors()` are."""
        return a[:, :, 0, 0], b, c[:, :, 0, 0]

    @torch.no_grad()
    def contract(self) -> nn.Conv2d:
        """The single conv this block computes (float64 product, cast back)."""
        if self.a.bias is not None or self.b.bias is not None:
            raise ValueError("a bias inside an expanded block is not contractible exactly (zero padding sees "
                             "0, not the bias): only the last 1x1 conv may carry one")
        a, b, c = (t.double() for t in self.factors())
        geometry = {k: v for k, v in self.spec().items() if k not in ("mid_in", "mid_out")}
        conv = nn.Conv2d(**geometry).to(self.b.weight.device, self.b.weight.dtype)
        conv.weight.copy_(torch.einsum("on,nmuv,mi->oiuv", c, b, a))
        if self.c.bias is not None:
            conv.bias.copy_(self.c.bias)
        return conv.train(self.training)

    def deploy(self) -> nn.Module:
        return self.contract()


@register_layer("expanded_linear")
class ExpandedLinear(Layer):
    """A Linear layer as three: Ci -> E Ci -> E Co -> Co, the last with the bias (module docstring)."""

    def __init__(self, in_features: int, out_features: int, mid_in: int, mid_out: int, bias: bool = True) -> None:
        super().__init__()
        self.a = nn.Linear(in_features, mid_in, bias=False)
        self.b = nn.Linear(mid_in, mid_out, bias=False)
        self.c = nn.Linear(mid_out, out_features, bias=bias)

    @classmethod
    def like(cls, linear: nn.Linear, expand: int) -> ExpandedLinear:
        out = cls(linear.in_features, linear.out_features, expand * linear.in_features, expand * linear.out_features,
                  linear.bias is not None)
        return out.to(linear.weight.device, linear.weight.dtype)

    def spec(self) -> dict[str, Any]:
        return {"in_features": self.a.in_features, "out_features": self.c.out_features, "mid_in": self.b.in_features,
                "mid_out": self.b.out_features, "bias": self.c.bias is not None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x)))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A: M x Ci, B: N x M x 1 x 1, C: Co x N), as for a 1x1 conv."""
        return self.factor_views(self.a.weight, self.b.weight, self.c.weight)

    @staticmethod
    def factor_views(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tensors shaped like a's, b's and c's weights (e.g. their gradients) viewed as `factors()` are."""
        return a, b[:, :, None, None], c

    @torch.no_grad()
    def contract(self) -> nn.Linear:
        if self.a.bias is not None or self.b.bias is not None:
            raise ValueError("only the last layer of an expanded block may carry a bias")
        linear = nn.Linear(self.a.in_features, self.c.out_features, bias=self.c.bias is not None)
        linear = linear.to(self.b.weight.device, self.b.weight.dtype)
        linear.weight.copy_(self.c.weight.double() @ self.b.weight.double() @ self.a.weight.double())
        if self.c.bias is not None:
            linear.bias.copy_(self.c.bias)
        return linear.train(self.training)

    def deploy(self) -> nn.Module:
        return self.contract()


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """A rows x cols matrix with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    q, _ = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64))
    return q if rows >= cols else q.T


@torch.no_grad()
def init_expansion(block: ExpandedConv2d | ExpandedLinear, weight: torch.Tensor, gen: torch.Generator,
                   how: str = "pinv", noise: float = 0.1) -> None:
    """Fill `block`'s factors so that it computes `weight` (Co x Ci [x k x k]) exactly (module docstring)."""
    if how not in INITS:
        raise ValueError(f"expansion init must be one of {INITS}, got {how!r}")
    w = weight.double().reshape(weight.shape[0], weight.shape[1], -1)  # Co x Ci x taps
    a_w, b_w, c_w = block.factors()
    (m, ci), (co, n) = a_w.shape, c_w.shape
    if how == "orthonormal":
        a, c = _orthonormal(m, ci, gen), _orthonormal(co, n, gen)
        b = torch.einsum("on,oit,mi->nmt", c, w, a)
    else:
        if how == "pinv":
            a = torch.randn(m, ci, generator=gen, dtype=torch.float64) / ci ** 0.5
            c = torch.randn(co, n, generator=gen, dtype=torch.float64) / n ** 0.5
        else:
            a, c = _orthonormal(m, ci, gen), _orthonormal(co, n, gen)
        # full column rank A and full row rank C (Gaussian, almost surely): the normal equations give the
        # pseudo-inverses exactly, several times faster than an SVD for ImageNet-sized layers
        a_pinv = torch.linalg.solve(a.T @ a, a.T)
        c_pinv = torch.linalg.solve(c @ c.T, c).T
        main = torch.einsum("no,oit,im->nmt", c_pinv, w, a_pinv)
        left = torch.eye(n, dtype=torch.float64) - c_pinv @ c  # annihilated by C on the left
        right = torch.eye(m, dtype=torch.float64) - a @ a_pinv  # annihilated by A on the right
        r1 = torch.randn(main.shape, generator=gen, dtype=torch.float64)
        r2 = torch.randn(main.shape, generator=gen, dtype=torch.float64)
        scale = noise * float(main.std()) if main.numel() > 1 else 0.0
        b = main + scale * (torch.einsum("nk,kmt->nmt", left, r1) + torch.einsum("nkt,km->nmt", r2, right))
    a_w.copy_(a)
    b_w.copy_(b.reshape(b_w.shape))
    c_w.copy_(c)
