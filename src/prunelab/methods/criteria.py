"""Filter-importance criteria (design.md, "Criterion").

Every criterion has the signature

    scores(model, layers, batches, seed) -> {conv name: tensor[C_out]}

where `layers` are the `Member`s (conv + where its feature map is read) to score and
`batches` a list of (images, labels) on the model's device.  Higher means more
important; the method keeps the top-k of each group.  Adding a criterion is one
decorated function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from prunelab.surgery.groups import Member

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
Criterion = Callable[[nn.Module, Sequence[Member], Batches, int], dict[str, torch.Tensor]]
CRITERIA: dict[str, Criterion] = {}


def criterion(name: str, needs_data: bool = True) -> Callable[[Criterion], Criterion]:
    """Register a scoring function under `method.criterion: <name>`; `needs_data=False` skips loading images."""

    def add(fn: Criterion) -> Criterion:
        fn.needs_data = needs_data  # type: ignore[attr-defined]
        CRITERIA[name] = fn
        return fn

    return add


@criterion("l1", needs_data=False)
def l1(model: nn.Module, layers: Sequence[Member], batches: Batches, seed: int) -> dict[str, torch.Tensor]:
    """L1 norm of each filter's weights (Li et al. 2017): sum |W[c]|."""
    return {m.conv: model.get_submodule(m.conv).weight.detach().abs().flatten(1).sum(1) for m in layers}


@criterion("random", needs_data=False)
def random(model: nn.Module, layers: Sequence[Member], batches: Batches, seed: int) -> dict[str, torch.Tensor]:
    """Uniform random scores, reproducible from `seed` (the straw-man baseline)."""
    gen = torch.Generator().manual_seed(seed)
    return {m.conv: torch.rand(model.get_submodule(m.conv).out_channels, generator=gen) for m in layers}


@torch.no_grad()
def feature_statistic(
    model: nn.Module,
    layers: Sequence[Member],
    batches: Batches,
    per_map: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Mean over all images of `per_map(feature maps)` for every layer, from one pass over `batches`.

    `per_map` takes the (B, C, H, W) maps of one layer and returns (B, C) values.  All
    layers are hooked at once; sums are kept on the device in float64, so the result is
    the exact mean whatever the batch split.  The model runs in eval mode (running BN
    statistics, as HRank scores).
    """
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    handles = []

    def hook(member: Member):
        def record(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            maps = torch.relu(out) if member.relu else out
            value = per_map(maps.float()).double().sum(0)
            sums[member.conv] = sums[member.conv] + value if member.conv in sums else value

        return record

    for m in layers:
        handles.append(model.get_submodule(m.feature).register_forward_hook(hook(m)))
    was_training = model.training
    model.eval()
    try:
        for images, _ in batches:
            model(images)
            seen += len(images)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {conv: (total / max(seen, 1)).float() for conv, total in sums.items()}
