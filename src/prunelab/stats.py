"""Paired comparisons of two arms over seeds: differences, a t interval and a verdict by a stated rule.

Two arms that share the dense weights, the data order and the seed are paired by seed: d_s = b_s - a_s.
With n >= 2 pairs, mean d, sample std s_d and the Student t quantile t(0.975, n - 1):

    interval = mean d -/+ t s_d / sqrt(n)

The verdict on a claim that arm b beats arm a (`direction` +1; -1: b is below a, e.g. a smaller loss)
by more than `tolerance` ... is read off the interval:

    reproduced      the whole interval lies on the claim's side of -tolerance (for "within tolerance"
                    claims) or of 0 (tolerance 0, "better than" claims)
    not reproduced  the whole interval lies on the other side
    inconclusive    the interval straddles the threshold
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

VERDICTS = ("reproduced", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Paired:
    """Paired differences b - a over the seeds both arms have."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    low: float
    high: float
    confidence: float = 0.95

    @property
    def n(self) -> int:
        return len(self.differences)

    def text(self) -> str:
        """"+1.00 [-0.50, +2.50]": the mean difference and its interval, two decimals."""
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> Paired:
    """b - a paired by seed (the seeds both have), with the two-sided t interval of the mean difference;
    fewer than two pairs are refused (no spread, no interval)."""
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        raise ValueError(f"a paired interval needs at least 2 common seeds, got {len(seeds)}")
    differences = tuple(float(b[s]) - float(a[s]) for s in seeds)
    mean, half = t_interval(differences, confidence)
    return Paired(seeds, differences, mean, mean - half, mean + half, confidence)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the two-sided Student t interval of the mean of `values` (n >= 2)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"an interval needs at least 2 values, got {n}")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)


def verdict(result: Paired, direction: int = 1, tolerance: float = 0.0) -> str:
    """The module docstring's rule: the claim is that `direction` x (b - a) > -`tolerance`."""
    if direction not in (1, -1) or tolerance < 0:
        raise ValueError("direction must be +1 or -1 and tolerance >= 0")
    low, high = sorted((direction * result.low, direction * result.high))
    if low > -tolerance:
        return "reproduced"
    if high < -tolerance:
        return "not reproduced"
    return "inconclusive"
