"""Paired differences, the t interval and the verdict rule (src/prunelab/stats.py) on hand-computed cases."""

from __future__ import annotations

import pytest

from prunelab.stats import paired, t_interval, verdict

T975_2 = 4.302652729  # Student t, 97.5 % quantile, 2 degrees of freedom (printed tables: 4.303)


def test_the_t_interval_of_three_values() -> None:
    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(T975_2 * 1.0 / 3 ** 0.5, rel=1e-9)  # t(0.975, 2) x s / sqrt(3), s = 1


def test_pairs_are_matched_by_seed_and_differences_are_b_minus_a() -> None:
    result = paired({0: 50.0, 1: 52.0, 2: 51.0, 7: 10.0}, {2: 52.0, 0: 51.0, 1: 55.0})
    assert result.seeds == (0, 1, 2) and result.differences == (1.0, 3.0, 1.0) and result.n == 3
    assert result.mean == pytest.approx(5 / 3)
    half = T975_2 * (4 / 3) ** 0.5 / 3 ** 0.5  # s^2 = ((2/3)^2 + (4/3)^2 + (2/3)^2) / 2 = 4/3
    assert (result.low, result.high) == (pytest.approx(5 / 3 - half), pytest.approx(5 / 3 + half))


def test_each_verdict() -> None:
    better = paired({0: 1.0, 1: 1.0, 2: 1.0}, {0: 3.0, 1: 3.1, 2: 2.9})  # interval well above 0
    worse = paired({0: 3.0, 1: 3.1, 2: 2.9}, {0: 1.0, 1: 1.0, 2: 1.0})
    noisy = paired({0: 1.0, 1: 1.0, 2: 1.0}, {0: 3.0, 1: -1.0, 2: 1.5})
    assert verdict(better) == "reproduced" and verdict(worse) == "not reproduced" and verdict(noisy) == "inconclusive"
    assert verdict(worse, direction=-1) == "reproduced"
    assert verdict(worse, tolerance=3.0) == "reproduced"  # within 3 points: the whole interval is above -3
    assert verdict(worse, tolerance=1.0) == "not reproduced"


def test_ties_give_a_zero_width_interval_and_a_threshold_on_it_is_inconclusive() -> None:
    tie = paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert (tie.mean, tie.low, tie.high) == (0.0, 0.0, 0.0)
    assert verdict(tie) == "inconclusive" and verdict(tie, tolerance=0.5) == "reproduced"


def test_fewer_than_two_pairs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 common seeds"):
        paired({0: 1.0, 1: 2.0}, {0: 1.5})
    with pytest.raises(ValueError, match="at least 2 values"):
        t_interval([1.0])
