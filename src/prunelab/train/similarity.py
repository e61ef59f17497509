"""Similarity-preserving distillation loss (Tung & Mori, ICCV 2019; docs/papers/linear_overparam.md §3).

For a batch of b samples, flatten each sample's feature map, Q (b x chw); the b x b Gram matrix
Q Q^T with each row divided by its L2 norm is G.  The loss between a student and a teacher feature is

    L_SP = ||G_student - G_teacher||_F^2 / b^2

It compares how the samples of a batch relate to each other, not the features themselves, so the
two maps may have different channel counts (a pruned layer against its dense original), and it is
invariant to a positive rescaling of either.  Computed in float32 (float64 inputs stay float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """G: the row-normalised b x b Gram matrix of the flattened features (b x ...)."""
    q = features.flatten(1)
    q = q if q.dtype == torch.float64 else q.float()
    with torch.autocast(q.device.type, enabled=False):  # inside a bf16 autocast step the product stays float32
        return F.normalize(q @ q.T, dim=1)


def similarity_preserving_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """||G_s - G_t||_F^2 / b^2 for features of the same batch (module docstring)."""
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"student and teacher features must come from the same batch: {student.shape[0]} vs "
                         f"{teacher.shape[0]} samples")
    b = student.shape[0]
    return (similarity_matrix(student) - similarity_matrix(teacher)).square().sum() / b**2
