"""Global allocation of a channel pruner (`method.allocation=global`): which filters go, ranked across layers.

Each filter's score is divided by the mean score of its group (Torch-Pruning's global ranking with the mean
normaliser), so layers of different scale compete on equal terms; all prunable filters are then ordered by that
normalised score, lowest first (ties: earlier group, then lower index).  Removing the first n filters of the order
(skipping any whose group would fall below `min_keep`) is a nested family in n, so the cost is non-increasing in n
and the largest n whose cost fits a budget is found by bisection on n; without a budget n is `ratio` times the
number of prunable filters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from prunelab.budget import fewest


def global_order(scores: dict[str, torch.Tensor]) -> list[tuple[str, int]]:
    """Every filter (group, channel) in ascending order of score / mean score of its group."""
    entries = []
    for rank, (name, values) in enumerate(scores.items()):
        normalised = values.detach().cpu().double() / values.detach().cpu().double().mean().clamp_min(1e-12)
        entries += [(float(v), rank, c, name) for c, v in enumerate(normalised.tolist())]
    return [(name, c) for _, _, c, name in sorted(entries)]


def kept_after(order: list[tuple[str, int]], channels: dict[str, int], n: int, min_keep: int = 1) -> dict[str, list[int]]:
    """The channels each group keeps when the first n removable filters of `order` go (at least `min_keep` each)."""
    left = dict(channels)
    removed: dict[str, set[int]] = {name: set() for name in channels}
    for name, c in order:
        if n <= 0:
            break
        if left[name] > min_keep:
            removed[name].add(c)
            left[name] -= 1
            n -= 1
    return {name: [c for c in range(channels[name]) if c not in removed[name]] for name in channels}


def removable(channels: dict[str, int], min_keep: int = 1) -> int:
    """How many filters can go in all (every group keeps `min_keep`)."""
    return sum(max(0, c - min_keep) for c in channels.values())


def fit_budget(order: list[tuple[str, int]], channels: dict[str, int], cost: Callable[[dict[str, list[int]]], float],
               budget: float, min_keep: int = 1) -> tuple[int, float]:
    """(n, cost at n): the fewest removals whose `cost` (a fraction of the dense cost) is at most `budget`, or
    (removable + 1, the floor's cost) when even the most removals do not fit (the caller refuses)."""
    low, high = 0, removable(channels, min_keep)
    at_low = cost(kept_after(order, channels, low, min_keep))
    if at_low <= budget:
        return low, at_low
    at_high = cost(kept_after(order, channels, high, min_keep))
    if at_high > budget:
        return high + 1, at_high
    n = fewest(low, high, lambda k: cost(kept_after(order, channels, k, min_keep)) <= budget)
    return n, cost(kept_after(order, channels, n, min_keep))
