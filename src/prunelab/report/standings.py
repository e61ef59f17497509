"""Standings at matched budgets: within each budget, every method paired by seed with the best on validation.

A table that declares `standings: <key>` (conf/tables/compare.yaml: `extra.budget_asked`) gets a page
`tables/<name>-standings.md`.  Within each value of the key the entrants are the table's lines (each method at
its validation-chosen lr).  The reference is the entrant with the highest mean validation accuracy over its
seeds (at least two; means equal to 1e-6 tie and go to the first in the table's order, alphabetical by method;
the test split plays no part in choosing it).  Every other entrant's test accuracy is paired with the
reference's by seed, d_s = acc_s - ref_s, and placed by the 95 % t interval of the mean d (prunelab/stats.py):

    below      the whole interval lies below 0
    above      the whole interval lies above 0 (the test split disagrees with the validation split)
    level      the interval contains 0: these runs cannot tell the entrant from the reference
    too few runs  fewer than two seeds in common with the reference
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from prunelab.report.claims import mean_std
from prunelab.report.spec import TableSpec
from prunelab.report.tables import number_text, table_runs
from prunelab.stats import Paired, paired

STANDINGS = ("reference", "level", "below", "above", "too few runs")


@dataclass(frozen=True)
class Entrant:
    """One line of a budget's standings: an entrant's accuracies by seed, its costs and its place."""

    budget: str
    name: str
    accs: dict[int, float]
    val: float  # mean validation accuracy over the seeds (NaN without a validation split)
    macs_red: float
    params_red: float
    speedup: float  # measured dense / compressed time (NaN where untimed)
    result: Paired | None = None  # acc - the reference's acc, paired by seed
    standing: str = ""


def standings(runs: pd.DataFrame, spec: TableSpec) -> dict[str, list[Entrant]]:
    """Budget value -> its entrants, the reference first, then by mean test accuracy (module docstring)."""
    frame = table_runs(runs, spec)
    entrant_keys = [k for k in spec.keys if k != spec.standings and (spec.select is None or k != spec.select.among)]
    out: dict[str, list[Entrant]] = {}
    for budget, runs_at in frame.groupby(spec.standings, sort=True):
        groups = list(runs_at.groupby(entrant_keys, sort=True, dropna=False))
        methods = [str(group["method"].iloc[0]) for _, group in groups]
        lines = [_entrant(str(budget), _name(group, methods), group) for _, group in groups]
        out[str(budget)] = _placed(lines)
    return out


def _name(group: pd.DataFrame, methods: list[str]) -> str:
    """The entrant's method, with its target where two entrants of one budget share the method."""
    method = str(group["method"].iloc[0])
    return method if methods.count(method) == 1 else f"{method} ({group['target'].iloc[0]})"


def _entrant(budget: str, name: str, group: pd.DataFrame) -> Entrant:
    accs = {int(s): float(a) for s, a in zip(group["seed"], group["acc"], strict=True)}
    return Entrant(budget, name, accs, float(group["val"].astype("float64").mean()),
                   float(group["macs_red"].mean()), float(group["params_red"].mean()),
                   float(group["speedup"].mean()))


def _placed(lines: list[Entrant]) -> list[Entrant]:
    """The reference (best mean validation accuracy, at least two seeds) and every other entrant against it."""
    candidates = [e for e in lines if len(e.accs) >= 2 and pd.notna(e.val)]
    if not candidates:
        return sorted((replace(e, standing="too few runs") for e in lines), key=lambda e: -_mean(e))
    reference = max(candidates, key=lambda e: (round(e.val, 6), -candidates.index(e)))  # ties: the first
    placed = [replace(reference, standing="reference")]
    for entrant in sorted((e for e in lines if e is not reference), key=lambda e: -_mean(e)):
        if len(set(entrant.accs) & set(reference.accs)) < 2:
            placed.append(replace(entrant, standing="too few runs"))
            continue
        result = paired(reference.accs, entrant.accs)
        standing = "below" if result.high < 0 else "above" if result.low > 0 else "level"
        placed.append(replace(entrant, result=result, standing=standing))
    return placed


def _mean(entrant: Entrant) -> float:
    return sum(entrant.accs.values()) / len(entrant.accs)


RULE = ("Within each budget the reference is the method with the highest mean validation accuracy (ties: the first "
        "in alphabetical order; the test split plays no part in choosing it); every other method's test top-1 is "
        "paired with the reference's by seed and placed by the 95 % t interval of the mean difference (src/prunelab/stats.py): **below** when the whole "
        "interval lies below 0, **above** when it lies above 0, **level** when it contains 0 (these runs cannot "
        "tell the two apart).")
BRIEF_RULE = ("Reference: the best mean validation accuracy; every other method paired with it by seed on test "
              "top-1, below or above when the 95 % t interval of the difference excludes 0, level when it contains 0.")


COLUMNS = ("method", "val acc %", "acc % mean ± std (n)", "MACs ↓ %", "params ↓ %", "measured ×",
           "Δ acc to reference [95 % CI]", "standing")


def _cells(e: Entrant) -> list[str]:
    diff = "" if e.result is None else e.result.text()
    return [e.name, number_text(e.val, 2), mean_std(e.accs), number_text(e.macs_red, 1), number_text(e.params_red, 1),
            number_text(e.speedup, 2), diff, e.standing]


def standings_frame(table: dict[str, list[Entrant]], key: str) -> pd.DataFrame:
    """The page's cells as one frame, the budget (`key`) first: the table W&B receives."""
    return pd.DataFrame([[budget, *_cells(e)] for budget, entrants in table.items() for e in entrants],
                        columns=[key, *COLUMNS])


def render_standings(table: dict[str, list[Entrant]], spec: TableSpec) -> str:
    """The standings page: one section per budget."""
    lines = [f"# Standings: {spec.title}", "",
             f"Generated by `python -m prunelab.report` from the runs of [{spec.name}]({spec.name}.md) "
             f"(`standings: {spec.standings}` in `conf/tables/{spec.name}.yaml`); do not edit.", "", RULE, ""]
    if not table:
        lines += ["No runs yet.", ""]
    for budget, entrants in table.items():
        lines += [f"## {budget}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for e in entrants:
            cells = _cells(e)
            cells[-1] = f"**{cells[-1]}**"
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def render_brief(table: dict[str, list[Entrant]], spec: TableSpec) -> str:
    """One line per budget (the reference, then the others by standing): the block the README shows."""
    lines = []
    for budget, entrants in table.items():
        reference = [e for e in entrants if e.standing == "reference"]
        parts = [f"reference **{reference[0].name}** {mean_std(reference[0].accs)}" if reference else "no reference"]
        for standing in STANDINGS[1:]:
            names = [e.name for e in entrants if e.standing == standing]
            if names:
                parts.append(f"{standing}: {', '.join(names)}")
        lines.append(f"- `{budget}`: " + "; ".join(parts))
    page = f"results/tables/{spec.name}-standings.md"
    return "\n".join(lines) + f"\n\n{BRIEF_RULE} Every number and the rule: [{page}]({page}).\n"
