"""A conv weight as a matrix, and the batched thin SVD the factorised layers and methods share.

A conv weight W (Cout x Cin/groups x k x k) is viewed as M = W.reshape(Cout, Cin/groups * k * k),
one row per output filter (LRPET §2.1 in docs/papers/lrpet.md).  SVDs run on stacks of equal
shapes, one call per group (`shape_groups`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def conv_matrix(conv: nn.Conv2d) -> torch.Tensor:
    """M = W.reshape(Cout, Cin/groups * k * k), one row per output filter."""
    return conv.weight.reshape(conv.out_channels, -1)


def thin_svd(m: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (U, s, Vh) of `m` (..., p, q) in `dtype`, retried in float64 if a lower precision fails.

    A wide matrix is decomposed through its transpose, M^T = U' S Vh' -> M = Vh'^T S U'^T: the
    tall orientation is about 1.6x faster in LAPACK for conv matrices (Cout < Cin*k*k).
    """
    if m.shape[-2] < m.shape[-1]:
        u, s, vh = thin_svd(m.mT, dtype)
        return vh.mT, s, u.mT
    try:
        return torch.linalg.svd(m.to(dtype), full_matrices=False)
    except torch.linalg.LinAlgError:
        if dtype == torch.float64:
            raise
        return tuple(t.to(dtype) for t in torch.linalg.svd(m.to(torch.float64), full_matrices=False))


def shape_groups(convs: Mapping[str, nn.Conv2d], key: Mapping[str, object] | None = None) -> list[list[str]]:
    """Names of `convs` grouped by weight shape, dtype and device (and `key[name]`), for one batched SVD each."""
    groups: dict[tuple, list[str]] = {}
    for name, conv in convs.items():
        w = conv.weight
        groups.setdefault((tuple(w.shape), w.dtype, w.device, None if key is None else key[name]), []).append(name)
    return list(groups.values())
