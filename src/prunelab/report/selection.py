"""Choosing a hyper-parameter on the validation split, the same way in drivers and in tables.

A table (or a driver) that sweeps a value such as the learning rate (`among`, e.g. `extra.lr`) over a small
grid keeps, per group of its other keys, only the runs at the value whose seed-`seed` run has the highest
validation accuracy (`by`, e.g. `extra.acc_val`); ties go to the smallest value.  The test split plays no part.
Only the selection seed runs the whole grid; the other seeds run at the chosen value (see
experiments/lop_cifar10.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from prunelab.report.frame import extra_values


@dataclass(frozen=True)
class Selection:
    """Keep the `among` value with the best `by` at seed `seed`, per group of the other keys."""

    among: str = "extra.lr"
    by: str = "extra.acc_val"
    seed: int = 0


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A result column, or an `extra.<key>` value of each run (NaN where a run lacks it)."""
    values = extra_values(frame, name.removeprefix("extra.")) if name.startswith("extra.") else frame[name]
    return pd.to_numeric(values.replace("", pd.NA), errors="coerce")


def chosen(frame: pd.DataFrame, keys: Sequence[str], selection: Selection) -> pd.DataFrame:
    """One row per group of `keys` (which must not include `selection.among`): the group's key values and the
    chosen `among` value, with its validation score as `score`.  Groups without a selection-seed run are absent."""
    pool = frame.assign(_among=column(frame, selection.among), _by=column(frame, selection.by))
    pool = pool[(pool["seed"].astype(int) == selection.seed) & pool["_by"].notna() & pool["_among"].notna()]
    if pool.empty:
        return pd.DataFrame(columns=[*keys, selection.among, "score"])
    pool = pool.sort_values([*keys, "_by", "_among"], ascending=[*([True] * len(keys)), False, True], kind="stable")
    best = pool.groupby(list(keys), sort=True, dropna=False).head(1) if keys else pool.head(1)
    return best[[*keys, "_among", "_by"]].rename(columns={"_among": selection.among, "_by": "score"}).reset_index(
        drop=True)


def keep_chosen(frame: pd.DataFrame, keys: Sequence[str], selection: Selection) -> pd.DataFrame:
    """The runs of `frame` at their group's chosen value (every seed), dropping the grid's other values; a group
    with no validation score at the selection seed (no validation split) is kept whole."""
    choice = chosen(frame, keys, selection).rename(columns={selection.among: "_chosen"})
    values = column(frame, selection.among)
    if not keys:  # one group: its chosen value, if any
        best = choice["_chosen"].iloc[0] if len(choice) else None
        return frame if best is None else frame[(values == best).to_numpy()]
    merged = frame.assign(_among=values).merge(choice, how="left", on=list(keys))
    keep = ((merged["_among"] == merged["_chosen"]) | merged["_chosen"].isna()).to_numpy()
    return frame[keep]
