"""A conv whose pruned filters are cheap spatial transformations of kept template filters
(CST: Miles & Mikolajczyk, ICCVW 2023, arXiv:2110.12844; docs/papers/spatial_transform.md §2).

A conv with C inputs, N outputs and a K x K kernel keeps M "templates" B_m (a subset of its filters)
and still outputs N channels: every other output n is rebuilt from one template m = row(n) by a cheap
transformation shared over the input channels of each of G channel groups (§2.1, §2.3):

    scalar         W_n[c] = T_{n,g(c)} ⊙ B_m[c]            a learned K x K mask per (output, group)
    rotation       W_n[c] = warp(B_m[c]; R(angle_{n,g(c)}))  a learned rotation of the K x K grid
    affine         W_n[c] = warp(B_m[c]; theta_{n,g(c)})     a learned 2 x 3 affine map
    affine+scalar  T ⊙ warp(...)                              both (our option; the sources do not say)

g(c) = floor(c G / C).  `warp` resamples the grid bilinearly with zero padding and align_corners=True
(so the identity is exact and 90 degrees is `rot90`); as it is linear in the taps it is a K^2 x K^2
sampling matrix S with at most 4 non-zeros per row, W_n[c] = S B_m[c] (`sampling_matrix`, §2.4).

Storage: `weight` has R rows, the transformations P entries; buffers `row` (N,) name each output's
weight row and `slot` (N,) its transformation (-1: a template, the identity).  During training
R = P = N (pruned rows unused, so the optimizer's tensors never change shape); `compact()` keeps
R = M and P = N - M, exactly the same function, K^2 C M + K^2 G (N - M) weights for the scalar family.

Gathers use `index_select`, whose backward is deterministic on the CPU (advanced indexing's is not).

Two forward paths compute the same function (float64-tested): "filter" builds the N filters and runs
one `F.conv2d` (training); "two_stage" is the paper's factorisation (§2.2): per tap k a grouped 1x1
conv of the templates' tap-k weights on the input grid that tap reads (the strided subgrid), then
each output sums its template's G x K^2 maps scaled by its transformation (identity: plain sums).
For the warp families the reference two-stage path evaluates stage 1 for all K^2 source taps on
each tap's grid (K^2 times the paper's stage-1 cost; a reference, not a fast path).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.layers.registry import Layer, register_layer

FAMILIES = ("scalar", "rotation", "affine", "affine+scalar")
PATHS = ("filter", "two_stage")


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def rotation_theta(angle: torch.Tensor) -> torch.Tensor:
    """2 x 3 matrices [[cos a, -sin a, 0], [sin a, cos a, 0]] for angles `angle` (...,)."""
    c, s, z = angle.cos(), angle.sin(), torch.zeros_like(angle)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1)], -2)


def sampling_matrix(theta: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """S (..., K^2, K^2) with warp(B) = S @ B.flatten() for 2 x 3 maps `theta` (..., 2, 3) on a kh x kw grid.

    Output tap (i, j) at normalised coordinates (u_j, v_i) in [-1, 1] (align_corners=True) reads the
    source point theta @ (u, v, 1) bilinearly, zero outside the grid, as `F.grid_sample` does: weight
    1 - f at floor(x) and f at floor(x) + 1 with f = x - floor(x) (per axis).  Written through the floor
    (not as a tent max(0, 1 - |x - x'|), whose gradient vanishes on the grid points) so that a warp at the
    identity still has a gradient and trains.
    """
    kh, kw = kernel
    lin = [torch.linspace(-1.0, 1.0, k, dtype=theta.dtype, device=theta.device) if k > 1
           else torch.zeros(1, dtype=theta.dtype, device=theta.device) for k in (kh, kw)]
    v, u = torch.meshgrid(lin[0], lin[1], indexing="ij")
    points = torch.stack([u.flatten(), v.flatten(), torch.ones_like(u.flatten())])  # (3, K^2)
    src = theta @ points  # (..., 2, K^2): source x, y of every output tap
    x = (src[..., 0, :] + 1) * (kw - 1) / 2
    y = (src[..., 1, :] + 1) * (kh - 1) / 2
    xs = torch.arange(kw, dtype=theta.dtype, device=theta.device)
    ys = torch.arange(kh, dtype=theta.dtype, device=theta.device)
    return (_linear_weights(y, ys)[..., :, None] * _linear_weights(x, xs)[..., None, :]).flatten(-2)


def _linear_weights(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(..., len(grid)) linear-interpolation weights of the points `x` (...) on the integer `grid`."""
    low = x.detach().floor()
    frac = (x - low)[..., None]
    return (1 - frac) * (grid == low[..., None]) + frac * (grid == low[..., None] + 1)


@register_layer("cst")
class CSTConv2d(Layer):
    """Templates + cheap transformations of them, N outputs (module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, bias: bool = False, groups: int = 2, family: str = "scalar",
                 rows: int | None = None, transforms: int | None = None, path: str = "filter") -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if groups < 1 or in_channels % groups:
            raise ValueError(f"groups={groups} must divide the {in_channels} input channels")
        self.in_channels, self.out_channels, self.groups, self.family = in_channels, out_channels, groups, family
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.path = path
        rows = out_channels if rows is None else rows
        transforms = out_channels if transforms is None else transforms
        self.transforms = transforms  # kept as a number: tracing then reads no tensor shape
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(rows, in_channels, kh, kw))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default init
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        if family in ("scalar", "affine+scalar"):
            self.scale = nn.Parameter(torch.ones(transforms, groups, kh, kw))
        if family == "rotation":
            self.angle = nn.Parameter(torch.zeros(transforms, groups))
        if family.startswith("affine"):
            self.theta = nn.Parameter(torch.eye(2, 3).repeat(transforms, groups, 1, 1))
        dense = rows == out_channels
        self.register_buffer("row", torch.arange(out_channels) if dense else torch.zeros(out_channels, dtype=torch.long))
        self.register_buffer("slot", torch.full((out_channels,), -1, dtype=torch.long))

    @classmethod
    def like(cls, conv: nn.Conv2d, groups: int = 2, family: str = "scalar", path: str = "filter") -> CSTConv2d:
        """The layer with every filter of `conv` a template (the same function), on its device and dtype."""
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("CSTConv2d replaces ungrouped convs with numeric zero padding only")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.bias is not None, groups, family, path=path).to(conv.weight.device, conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def spec(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
            "stride": list(self.stride), "padding": list(self.padding), "dilation": list(self.dilation),
            "bias": self.bias is not None, "groups": self.groups, "family": self.family,
            "rows": self.weight.shape[0], "transforms": self.transforms, "path": self.path,
        }

    @property
    def templates(self) -> torch.Tensor:
        """(N,) bool: the outputs that are templates (identity transformation)."""
        return self.slot < 0

    @property
    def num_templates(self) -> int:
        return int(self.templates.sum())

    @property
    def compacted(self) -> bool:
        return self.weight.shape[0] == self.num_templates

    def mixing(self) -> torch.Tensor:
        """A (N, G, K^2, K^2): output n's filter on group g is A[n, g] @ (its template's taps); identity for templates."""
        kk = self.kernel_size[0] * self.kernel_size[1]
        n, g = self.out_channels, self.groups
        eye = torch.eye(kk, dtype=self.weight.dtype, device=self.weight.device).expand(n, g, kk, kk)
        if self.transforms == 0:  # no child (a compact layer that kept every filter)
            return eye
        child = self.slot >= 0
        index = self.slot.clamp_min(0)
        mix = eye
        if self.family == "rotation":
            mix = sampling_matrix(rotation_theta(self.angle), self.kernel_size).index_select(0, index)
        elif self.family.startswith("affine"):
            mix = sampling_matrix(self.theta, self.kernel_size).index_select(0, index)
        if self.family in ("scalar", "affine+scalar"):
            mix = self.scale.flatten(2).index_select(0, index)[..., None] * mix  # the mask scales the (warped) taps
        return torch.where(child[:, None, None, None], mix, eye)

    def effective_weight(self) -> torch.Tensor:
        """The N filters (N, C, kh, kw) the layer applies (the filter path's weight)."""
        n, c, g = self.out_channels, self.in_channels, self.groups
        kh, kw = self.kernel_size
        base = self.weight.index_select(0, self.row).reshape(n, g, c // g, kh * kw)
        if self.transforms == 0:
            return base.reshape(n, c, kh, kw)
        if self.family == "scalar":  # a diagonal mixing: an element-wise product
            child = (self.slot >= 0)[:, None, None, None]
            mask = torch.where(child, self.scale.index_select(0, self.slot.clamp_min(0)).flatten(2)[:, :, None, :], 1.0)
            return (base * mask).reshape(n, c, kh, kw)
        return torch.einsum("ngkl,ngcl->ngck", self.mixing(), base).reshape(n, c, kh, kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.filter_forward(x) if self.path == "filter" else self.two_stage_forward(x)

    def filter_forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.effective_weight().to(x.dtype)
        return F.conv2d(x, weight, None if self.bias is None else self.bias.to(x.dtype), self.stride, self.padding,
                        self.dilation)

    def two_stage_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 1 (grouped 1x1 GEMMs of the template taps on each tap's strided grid), stage 2 (scaled sums)."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        b, c, h, w = x.shape
        g, r, kk = self.groups, self.weight.shape[0], kh * kw
        ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        xp = F.pad(x, (pw, pw, ph, ph))
        taps = self.weight.to(x.dtype).reshape(r, g, c // g, kk)
        mix = self.mixing().to(x.dtype)  # (N, G, K^2, K^2)
        diagonal = self.family == "scalar"
        out = x.new_zeros(b, self.out_channels, ho, wo)
        for k in range(kk):
            i, j = divmod(k, kw)
            grid = xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            sources = [k] if diagonal else list(range(kk))
            # (G, sources, R) output maps of a 1x1 conv with G groups: group-major, then source tap, then row
            kernel = taps[:, :, :, sources].permute(1, 3, 0, 2).reshape(g * len(sources) * r, c // g, 1, 1)
            z = F.conv2d(grid, kernel, groups=g).reshape(b, g, len(sources), r, ho, wo).index_select(3, self.row)
            coef = mix[:, :, k, sources]  # (N, G, sources)
            out = out + torch.einsum("bgsnhw,ngs->bnhw", z, coef)
        return out if self.bias is None else out + self.bias.to(x.dtype)[:, None, None]

    def count_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        """Ho Wo [K^2 C M + f K^2 G (N - M)], f = 1 (scalar) or 4 (bilinear warps) (spec §3, typo corrected)."""
        kk = self.kernel_size[0] * self.kernel_size[1]
        m = self.num_templates
        per_tap = 1 if self.family == "scalar" else 4
        return output.shape[-2] * output.shape[-1] * (kk * self.in_channels * m
                                                       + per_tap * kk * self.groups * (self.out_channels - m))

    @torch.no_grad()
    def compact(self) -> CSTConv2d:
        """The same function with only the template rows and the children's transformations stored."""
        templates = self.templates.nonzero().flatten()
        children = (~self.templates).nonzero().flatten()
        out = type(self)(**{**self.spec(), "rows": len(templates), "transforms": len(children)})
        out = out.to(self.weight.device, self.weight.dtype)
        position = torch.full((self.weight.shape[0],), -1, dtype=torch.long, device=self.row.device)
        sources = self.row[templates]  # the rows the templates use
        position[sources] = torch.arange(len(templates), device=self.row.device)
        out.weight.copy_(self.weight[sources])
        out.row.copy_(position[self.row])
        out.slot.fill_(-1)
        out.slot[children] = torch.arange(len(children), device=self.slot.device)
        for name in ("scale", "angle", "theta"):
            if hasattr(self, name):
                getattr(out, name).copy_(getattr(self, name)[self.slot[children]])
        if self.bias is not None:
            out.bias.copy_(self.bias)
        if (position[self.row] < 0).any():
            raise ValueError("an output is built from a row that is not a template's")
        return out

    def deploy(self) -> nn.Module:
        return self if self.compacted else self.compact()

    @torch.no_grad()
    def reassign(self, keep: torch.Tensor, refit: str = "lstsq") -> None:
        """Make the outputs in `keep` (N,) bool the templates (training form; a subset of the current ones).

        Round robin over the other outputs in channel order: pruned output r is rebuilt from the
        (r mod M)-th template (spec §2.1).  An output whose template changes gets a fresh
        transformation: `refit="lstsq"` the per-(group, tap) least-squares mask of its current filter
        onto the new template, T = <W, B> / ||B||^2 (1 where ||B|| = 0), with the warp reset to the
        identity; `refit="ones"` an exact copy of the template.
        """
        if self.weight.shape[0] != self.out_channels:
            raise ValueError("reassign works on the training form (before compact())")
        if (keep & ~self.templates).any():
            raise ValueError("pruning is monotone: a pruned output cannot become a template again")
        kept = keep.nonzero().flatten()
        if len(kept) == 0:
            raise ValueError("at least one template must remain")
        lstsq = refit == "lstsq" and hasattr(self, "scale")
        current = self.effective_weight() if lstsq else None  # before the mapping changes
        pruned = (~keep).nonzero().flatten()
        row = torch.arange(self.out_channels, device=self.row.device)
        row[pruned] = kept[torch.arange(len(pruned), device=kept.device) % len(kept)]
        changed = pruned[(self.row[pruned] != row[pruned]) | self.templates[pruned]]
        self.row.copy_(row)
        self.slot.copy_(torch.where(keep, -1, torch.arange(self.out_channels, device=self.slot.device)))
        if hasattr(self, "angle"):
            self.angle[changed] = 0.0
        if hasattr(self, "theta"):
            self.theta[changed] = torch.eye(2, 3, dtype=self.theta.dtype, device=self.theta.device)
        if hasattr(self, "scale"):
            self.scale[changed] = 1.0
            if lstsq and len(changed):
                self.scale[changed] = self._lstsq_scale(current[changed], changed)

    def _lstsq_scale(self, target: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """Per (group, tap) mask T minimising ||T ⊙ A - W|| for W = `target` and A = each output's current
        source filter (warped by its transformation): T = <W, A> / ||A||^2, 1 where ||A|| = 0."""
        n, c, g = len(outputs), self.in_channels, self.groups
        kh, kw = self.kernel_size
        saved = self.scale[outputs].clone()
        self.scale[outputs] = 1.0
        source = self.effective_weight()[outputs].reshape(n, g, c // g, kh * kw)
        self.scale[outputs] = saved
        want = target.reshape(n, g, c // g, kh * kw)
        num, den = (want * source).sum(2), source.square().sum(2)
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 1.0).reshape(n, g, kh, kw)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"templates={self.num_templates}, groups={self.groups}, family={self.family}, path={self.path}")
