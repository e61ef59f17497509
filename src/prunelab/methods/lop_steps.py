"""How fast an expanded layer moves: its first SGD step, contracted, against the plain layer's (docs/papers/linear_overparam.md §2.8).

An expanded layer W_t = C B_t A (tap t of the k x k kernel) trains its factors, not W.  One SGD step of
learning rate eta x s on the factors, along their first-step directions dA, dB, dC (gradient plus weight
decay times the factor), moves the contracted weight by

    dW_t(s) = (C - eta s dC)(B_t - eta s dB_t)(A - eta s dA) - C B_t A
            = -eta s (dC B_t A + C dB_t A + C B_t dA) + O(eta^2 s^2)

where plain fine-tuning moves W by -eta d (d = dL/dW + weight decay x W).  `step_ratio` is
||dW(s)|| / (eta ||d||): how many times faster the layer moves than the plain one (the factor gradients
are Gram products of the others, so the ratio depends on the init's conditioning: several times at E = 2
with the pinv init).  dW is a cubic in eta s, so its squared norm is a polynomial whose coefficients are the
inner products of three terms (`ContractedStep`); `matching_scale` solves step_ratio(s) = 1 for s by
bisection on that exact norm, which is what `method.lr_match` gives each layer's factors as their lr scale.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # A: M x Ci, B: N x M x k x k, C: Co x N


def _chain(c: torch.Tensor, b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """C B_t A for every tap t (Co x Ci x k x k), C times B first."""
    return torch.einsum("omuv,mi->oiuv", torch.einsum("on,nmuv->omuv", c, b), a)


def update_terms(factors: Factors, directions: Factors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X1, X2, X3), float64, with dW(eta) = -eta X1 + eta^2 X2 - eta^3 X3 the exact change of C B A after one step
    of lr eta along -`directions`:  X1 = dC B A + C dB A + C B dA,  X2 = dC dB A + dC B dA + C dB dA,  X3 = dC dB dA."""
    a, b, c = (t.detach().double() for t in factors)
    da, db, dc = (t.detach().double() for t in directions)
    one = torch.einsum("on,nmuv->omuv", dc, b) + torch.einsum("on,nmuv->omuv", c, db)  # (dC B + C dB)
    both = torch.einsum("on,nmuv->omuv", dc, db)
    x1 = torch.einsum("omuv,mi->oiuv", one, a) + _chain(c, b, da)
    x2 = torch.einsum("omuv,mi->oiuv", both, a) + torch.einsum("omuv,mi->oiuv", one, da)
    return x1, x2, torch.einsum("omuv,mi->oiuv", both, da)


def contracted_update(factors: Factors, directions: Factors, lr: float) -> torch.Tensor:
    """dW (Co x Ci x k x k, float64): the exact change of C B A after one step of `lr` along -`directions`."""
    a, b, c = (t.detach().double() for t in factors)
    da, db, dc = (t.detach().double() for t in directions)
    return _chain(c - lr * dc, b - lr * db, a - lr * da) - _chain(c, b, a)


@dataclass(frozen=True)
class ContractedStep:
    """||dW(eta)||^2 as the polynomial sum_ij (-1)^(i+j) eta^(i+j) <X_i, X_j> of the step's lr (`update_terms`),
    so that its norm at any lr costs nothing once the terms' inner products are known."""

    gram: tuple[tuple[float, ...], ...]  # <X_i, X_j>, i, j = 1..3

    @classmethod
    def of(cls, factors: Factors, directions: Factors) -> ContractedStep:
        terms = update_terms(factors, directions)
        return cls(tuple(tuple(float((x * y).sum()) for y in terms) for x in terms))

    def norm(self, lr: float) -> float:
        """||dW(lr)||."""
        square = sum((-1) ** (i + j) * lr ** (i + j + 2) * self.gram[i][j] for i in range(3) for j in range(3))
        return max(square, 0.0) ** 0.5


def step_ratio(step: ContractedStep, plain_norm: float, lr: float, scale: float = 1.0) -> float:
    """||dW(lr x scale)|| / (lr ||d||): the contracted step at lr x `scale` over the plain layer's step at lr, where
    `plain_norm` = ||d|| is the norm of the plain layer's first-step direction (module docstring)."""
    if plain_norm <= 0:
        raise ValueError("the plain layer's first step is zero: no ratio to match")
    return step.norm(lr * scale) / (lr * plain_norm)


def matching_scale(step: ContractedStep, plain_norm: float, lr: float, tolerance: float = 1e-13) -> float:
    """The lr scale s > 0 at which the contracted step's norm equals the plain step's, step_ratio(s) = 1:
    bracketed from the first-order estimate by doubling, then bisected to `tolerance` (relative to s)."""
    def ratio(s: float) -> float:
        return step_ratio(step, plain_norm, lr, s)

    first_order = step.gram[0][0] ** 0.5 / plain_norm  # ratio(s) ~ s ||X1|| / ||d|| for small s
    if first_order == 0:
        raise ValueError("the factors' first step does not move the contracted weight: no scale matches")
    high = 1.0 / first_order
    for _ in range(200):
        if ratio(high) >= 1.0:
            break
        high *= 2.0
    low = 0.0
    while high - low > tolerance * high:
        middle = 0.5 * (low + high)
        low, high = (middle, high) if ratio(middle) < 1.0 else (low, middle)
    return 0.5 * (low + high)


def first_step_lr(recipe: Mapping[str, Any]) -> float:
    """The first SGD step's effective lr: the recipe's lr, times (1 + momentum) with Nesterov (the first
    step of PyTorch's SGD adds momentum x its buffer, which is the gradient itself)."""
    lr = float(recipe["lr"])
    return lr * (1.0 + float(recipe["momentum"])) if recipe["nesterov"] else lr


def loss_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """dL/dp by parameter name for the cross-entropy of one batch, on a copy of `model` in training mode (the
    model's own BatchNorm statistics and gradients are left as they are; images cast to the model's dtype)."""
    twin = copy.deepcopy(model).train()
    twin.zero_grad(set_to_none=True)
    dtype = next(twin.parameters()).dtype
    F.cross_entropy(twin(images.to(dtype)), labels, label_smoothing=label_smoothing).backward()
    return {name: p.grad.detach().clone() for name, p in twin.named_parameters() if p.grad is not None}


def first_step_directions(params: Iterable[tuple[str, torch.Tensor]], grads: Mapping[str, torch.Tensor],
                          decay: float) -> dict[str, torch.Tensor]:
    """The direction of SGD's first step by name: gradient + decay x parameter (momentum's buffer is empty)."""
    return {name: grads[name] + decay * p.detach() for name, p in params if name in grads}
