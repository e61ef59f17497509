"""Low-rank projection with energy transfer and the two-conv low-rank layer (LRPET).

Guo, Lin et al., "Compact Model Training by Low-Rank Projection With Energy Transfer",
IEEE TNNLS 2024 (papers/lrpet.md).  A conv weight W (Cout x Cin x k x k) is viewed as the
matrix M = W.reshape(Cout, Cin*k*k) (LRPET §2.1).  The functions here are pure tensor maps
on stacks of such matrices (batched SVD, one call per group of equal shapes); the method
(methods/lrpet.py) decides which convs, which ranks and when.

Export (LRPET §2.6): a conv of rank r becomes `LowRankConv2d` = a k x k conv with r filters
(`basis`, sqrt(s) Vh) followed by a 1x1 conv (`mix`, U sqrt(s), carrying the bias).  A dead
conv (s1 below a threshold) becomes `ZeroConv2d`, whose output is zeros (plus the bias):
never an identity, which is what the official code substitutes (LRPET §5.8).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

TRANSFERS = ("scale", "additive", "none")


def rank_for(n: int, g: float) -> int:
    """Kept rank r = int(n - n*g) (float64, truncation toward zero), at least 1 (LRPET §2.2).

    `n` = min(Cout, Cin*k*k) singular values, `g` = fraction removed.  Literal float
    arithmetic, as the official code: rank_for(450, 0.54) == 206, not 207.
    """
    return max(1, int(n - n * g))


def conv_matrix(conv: nn.Conv2d) -> torch.Tensor:
    """M = W.reshape(Cout, Cin/groups * k * k), one row per output filter (LRPET §2.1)."""
    return conv.weight.reshape(conv.out_channels, -1)


def bn_row_scale(bn: _BatchNorm) -> torch.Tensor:
    """a = gamma / sqrt(running_var + eps): the per-channel row scale BN folds into the conv (LRPET §2.4)."""
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)


def energy_transfer(s: torch.Tensor, ranks: torch.Tensor, mode: str = "scale", redu_fac: float = 0.0) -> torch.Tensor:
    """New singular values s' (..., k) for descending `s` and kept ranks `ranks` (...) (LRPET §2.3).

    The tail i > r becomes rho*s_i (rho = `redu_fac`, 0 = truncation).  The head i <= r:
      scale    (official code): s'_i = sqrt(alpha) s_i, alpha = (sum s^2 - rho^2 sum_tail s^2) / sum_head s^2,
               one common factor, so sum s'^2 == sum s^2;
      additive (ablation): s'_i^2 = s_i^2 + (1 - rho^2) sum_tail s^2 / r, equal shares, same energy;
      none     : s'_i = s_i (plain Eckart-Young truncation; energy drops).
    """
    if mode not in TRANSFERS:
        raise ValueError(f"energy transfer must be one of {TRANSFERS}, got {mode!r}")
    head = torch.arange(s.shape[-1], device=s.device) < ranks.unsqueeze(-1)
    sq = s.square()
    head_energy = (sq * head).sum(-1, keepdim=True)
    tail_energy = sq.sum(-1, keepdim=True) - head_energy
    tail = redu_fac * s
    if mode == "none":
        kept = s
    elif mode == "scale":
        alpha = (head_energy + (1.0 - redu_fac**2) * tail_energy) / head_energy.clamp_min(torch.finfo(s.dtype).tiny)
        kept = s * alpha.sqrt()
    else:
        r = ranks.unsqueeze(-1).to(s.dtype)
        kept = (sq + (1.0 - redu_fac**2) * tail_energy / r).sqrt()
    return torch.where(head, kept, tail)


def _svd(m: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (U, s, Vh) of `m` (..., p, q) in `dtype`, retried in float64 if a lower precision fails.

    A wide matrix is decomposed through its transpose, M^T = U' S Vh' -> M = Vh'^T S U'^T: the
    tall orientation is about 1.6x faster in LAPACK for conv matrices (Cout < Cin*k*k).
    """
    if m.shape[-2] < m.shape[-1]:
        u, s, vh = _svd(m.mT, dtype)
        return vh.mT, s, u.mT
    try:
        return torch.linalg.svd(m.to(dtype), full_matrices=False)
    except torch.linalg.LinAlgError:
        if dtype == torch.float64:
            raise
        return tuple(t.to(dtype) for t in torch.linalg.svd(m.to(torch.float64), full_matrices=False))


def project(
    m: torch.Tensor,
    ranks: torch.Tensor | int,
    row_scale: torch.Tensor | None = None,
    *,
    transfer: str = "scale",
    redu_fac: float = 0.0,
    bn_eps: float = 1e-5,
    dead_threshold: float = 1e-4,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Rank-`ranks` projection with energy transfer of a matrix or a stack (B, m, n) (LRPET §2.3-2.4).

    Without `row_scale`: M' = U diag(s') Vh with s' from `energy_transfer`.  With the BN
    row scale a (B, m): project the folded matrix diag(a) M, then map back with the damped
    inverse diag(a / (a^2 + bn_eps)) (the official code's eps_set; exact only for
    a^2 >> bn_eps).  A matrix whose (folded) s1 is below `dead_threshold` is returned
    unchanged, as the official code skips it.  The SVD runs in `dtype`; the result has m's dtype.
    """
    work = m.to(dtype)
    if row_scale is not None:
        a = row_scale.to(dtype).unsqueeze(-1)
        work = a * work
    u, s, vh = _svd(work, dtype)
    ranks = torch.as_tensor(ranks, device=m.device).expand(s.shape[:-1])
    out = u @ (energy_transfer(s, ranks, transfer, redu_fac).unsqueeze(-1) * vh)
    if row_scale is not None:
        out = a / (a.square() + bn_eps) * out
    dead = (s[..., 0] < dead_threshold)[..., None, None]
    return torch.where(dead, m.to(dtype), out).to(m.dtype)


def shape_groups(convs: Mapping[str, nn.Conv2d], key: Mapping[str, object] | None = None) -> list[list[str]]:
    """Names of `convs` grouped by weight shape, dtype and device (and `key[name]`), for one batched SVD each."""
    groups: dict[tuple, list[str]] = {}
    for name, conv in convs.items():
        w = conv.weight
        groups.setdefault((tuple(w.shape), w.dtype, w.device, None if key is None else key[name]), []).append(name)
    return list(groups.values())


class LowRankConv2d(nn.Module):
    """A rank-r conv: `basis` (k x k, r filters, the conv's stride/padding/dilation) then `mix` (1x1, bias)."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        if conv.groups != 1:
            raise ValueError("LowRankConv2d factorises ungrouped convs only")
        like = {"device": conv.weight.device, "dtype": conv.weight.dtype}
        self.basis = nn.Conv2d(
            conv.in_channels, rank, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            bias=False, padding_mode=conv.padding_mode, **like,
        )
        self.mix = nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None, **like)

    @property
    def rank(self) -> int:
        return self.basis.out_channels

    def dense_weight(self) -> torch.Tensor:
        """The equivalent single-conv weight mix @ basis (Cout x Cin x k x k)."""
        return torch.einsum("or,rikl->oikl", self.mix.weight[:, :, 0, 0], self.basis.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.basis(x))


class ZeroConv2d(nn.Module):
    """A removed (dead) conv: outputs zeros of the conv's output shape, plus its bias if it had one."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation
        self.padding = conv.padding
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

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


def to_lowrank(model: nn.Module, ranks: Mapping[str, int]) -> nn.Module:
    """Replace each conv named in `ranks` by a (freshly initialised) `LowRankConv2d` of that rank, or
    by `ZeroConv2d` for rank 0; the structure of an exported model (e.g. to load its state dict)."""
    for name, rank in ranks.items():
        conv = model.get_submodule(name)
        model.set_submodule(name, LowRankConv2d(conv, rank) if rank > 0 else ZeroConv2d(conv))
    return model


@torch.no_grad()
def export_lowrank(
    model: nn.Module, ranks: Mapping[str, int], dead: Collection[str] = (), dtype: torch.dtype = torch.float64
) -> nn.Module:
    """Replace each conv in `ranks` by its rank-r factorisation (plain truncated SVD), in place (LRPET §2.6).

    M ~ U_r diag(s_r) Vh_r is split by square roots: basis = sqrt(s_r) Vh_r, mix = U_r sqrt(s_r);
    the bias moves to `mix`.  On a projected model (rank <= r already) this is exact.  Convs
    in `dead` become `ZeroConv2d`.  SVDs are batched per weight shape, in `dtype`.
    """
    alive = {n: model.get_submodule(n) for n in ranks if n not in dead}
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for names in shape_groups(alive):
        u, s, vh = _svd(torch.stack([conv_matrix(alive[n]) for n in names]), dtype)
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
