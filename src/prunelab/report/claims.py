"""The verdict page (results/claims.md): each paper's claims, tested on recorded runs by a stated rule.

One YAML file per paper under ``conf/claims/``::

    paper: Boosting Pruned Networks with Linear Over-parameterization (arXiv:2204.11444)
    notes: docs/papers/linear_overparam.md
    claims:
      - id: lop-l1-0.9
        claim: LOP beats plain fine-tuning of the same pruned network (L1, ratio 0.9)
        source: arXiv:2204.11444 v3, abstract
        select: {among: extra.lr, by: extra.acc_val, seed: 0}   # optional: the value chosen on validation
        a: {experiment: lop_cifar10, method: l1, target: "ratio=0.9"}        # the baseline arm
        b: {experiment: lop_cifar10, method: lop(l1), target: "E=2; gamma=3000; ratio=0.9"}
        versus: {a: {...}, b: {...}}   # optional: the claim is about (b - a) - (versus.b - versus.a)
        direction: 1                   # +1: b above a (or the contrast above 0); -1: below
        tolerance: 0                   # points: "within 1 point" claims give 1
        table: lop_cifar10             # the table the numbers come from (a link)
      - id: ...
        untestable: why this setting cannot test it   # a row with its reason instead of numbers

Arms match runs by column values (compared as text); the metric is `acc_final` (test top-1, %).  Runs are
paired by seed (prunelab/stats.py: mean difference, 95 % t interval, verdict: reproduced / not reproduced /
inconclusive; fewer than two pairs: "too few runs").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from prunelab.errors import UserError, one_line
from prunelab.report.selection import Selection, keep_chosen
from prunelab.stats import Paired, paired, verdict

_CLAIM_KEYS = frozenset({"id", "claim", "source", "select", "a", "b", "versus", "direction", "tolerance", "table",
                         "untestable"})
METRIC = "acc_final"


@dataclass(frozen=True)
class Claim:
    """One claim of a paper and the two arms (or a contrast of two pairs) that test it."""

    id: str
    claim: str
    source: str = ""
    a: dict[str, str] = field(default_factory=dict)
    b: dict[str, str] = field(default_factory=dict)
    versus: tuple[dict[str, str], dict[str, str]] | None = None
    select: Selection | None = None
    direction: int = 1
    tolerance: float = 0.0
    table: str = ""
    untestable: str = ""


@dataclass(frozen=True)
class PaperClaims:
    paper: str
    notes: str
    claims: tuple[Claim, ...]


@dataclass(frozen=True)
class Verdict:
    """A claim's numbers: each arm's accuracies by seed, the paired result and the verdict."""

    claim: Claim
    arms: dict[str, dict[int, float]]  # "a", "b" (and "versus.a", "versus.b") -> {seed: acc}
    result: Paired | None
    verdict: str


def load_claims(folder: Path) -> list[PaperClaims]:
    """Every `*.yaml` of `folder`, checked (one line naming the file and key for a bad entry)."""
    return [_load(path) for path in sorted(folder.glob("*.yaml"))]


def _load(path: Path) -> PaperClaims:
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, YAMLError, OmegaConfBaseException) as err:
        raise UserError(f"{path}: cannot read: {one_line(err)}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("claims"), list) or not raw.get("paper"):
        raise UserError(f"{path}: expected paper, notes and a list of claims")
    claims = tuple(_claim(f"{path}: claims[{i}]", item) for i, item in enumerate(raw["claims"]))
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: claim ids must be unique, got {ids}")
    return PaperClaims(str(raw["paper"]), str(raw.get("notes", "")), claims)


def _claim(where: str, item: Any) -> Claim:
    if not isinstance(item, dict) or not item.get("id") or not item.get("claim"):
        raise UserError(f"{where}: every claim needs an id and a claim")
    unknown = set(item) - _CLAIM_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)} (known: {', '.join(sorted(_CLAIM_KEYS))})")
    common = {"id": str(item["id"]), "claim": str(item["claim"]), "source": str(item.get("source", "")),
              "table": str(item.get("table", ""))}
    if item.get("untestable"):
        return Claim(**common, untestable=str(item["untestable"]))
    arms = {k: _arm(f"{where}.{k}", item.get(k)) for k in ("a", "b")}
    versus = item.get("versus")
    if versus is not None:
        if not isinstance(versus, dict) or set(versus) != {"a", "b"}:
            raise UserError(f"{where}.versus: expected a mapping with a and b")
        versus = (_arm(f"{where}.versus.a", versus["a"]), _arm(f"{where}.versus.b", versus["b"]))
    direction, tolerance = int(item.get("direction", 1)), float(item.get("tolerance", 0))
    if direction not in (1, -1) or tolerance < 0:
        raise UserError(f"{where}: direction must be 1 or -1 and tolerance >= 0")
    select = item.get("select")
    selection = None if select is None else Selection(str(select.get("among", Selection.among)),
                                                      str(select.get("by", Selection.by)), int(select.get("seed", 0)))
    return Claim(**common, a=arms["a"], b=arms["b"], versus=versus, select=selection, direction=direction,
                 tolerance=tolerance)


def _arm(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{where}: expected a mapping of column: value that selects the arm's runs")
    return {str(k): str(v) for k, v in value.items()}


def arm_runs(runs: pd.DataFrame, match: dict[str, str], selection: Selection | None, name: str = "") -> dict[int, float]:
    """{seed: acc_final} of the runs matching every `match` column (text), at the value `selection` keeps; two runs
    of one seed are refused (an arm is one run per seed: narrow `match` or give `select`)."""
    keep = pd.Series(True, index=runs.index)
    for column, value in match.items():
        keep &= runs[column].astype("string").fillna("") == value
    chosen = runs[keep]
    if selection is not None:
        chosen = keep_chosen(chosen, [], selection)
    seeds = chosen["seed"].astype(int)
    if seeds.duplicated().any():
        seed = int(seeds[seeds.duplicated()].iloc[0])
        raise UserError(f"{name} matches {int((seeds == seed).sum())} runs of seed {seed}: an arm is one run per "
                        "seed (narrow its columns or give the claim a select)")
    return {int(s): float(a) for s, a in zip(seeds, chosen[METRIC])}


def evaluate(runs: pd.DataFrame, claim: Claim) -> Verdict:
    """The claim's arms, paired by seed (a contrast: per seed (b - a) - (versus.b - versus.a)), and its verdict."""
    if claim.untestable:
        return Verdict(claim, {}, None, "not tested")
    matches = {"a": claim.a, "b": claim.b, **({"versus.a": claim.versus[0], "versus.b": claim.versus[1]}
                                               if claim.versus is not None else {})}
    arms = {key: arm_runs(runs, match, claim.select, f"claim {claim.id}: arm {key}") for key, match in matches.items()}
    seeds = sorted(set.intersection(*(set(v) for v in arms.values())))
    if len(seeds) < 2:
        return Verdict(claim, arms, None, "too few runs")
    first = {s: arms["a"][s] + (arms["versus.b"][s] - arms["versus.a"][s] if claim.versus else 0.0) for s in seeds}
    result = paired(first, {s: arms["b"][s] for s in seeds})
    return Verdict(claim, arms, result, verdict(result, claim.direction, claim.tolerance))


def _mean_std(values: dict[int, float]) -> str:
    if not values:
        return "no runs"
    series = pd.Series(list(values.values()), dtype="float64")
    std = "" if len(series) < 2 else f" ± {series.std():.2f}"
    return f"{series.mean():.2f}{std} ({len(series)})"


def _rule(claim: Claim) -> str:
    side = ">" if claim.direction == 1 else "<"
    bound = f"{'-' if claim.direction == 1 else ''}{claim.tolerance:g}" if claim.tolerance else "0"
    quantity = "(b − a) − (b′ − a′)" if claim.versus else "b − a"
    return f"{quantity} {side} {bound}"


def render_claims(papers: list[PaperClaims], runs: pd.DataFrame) -> str:
    """The markdown verdict page: one row per claim, grouped by paper."""
    lines = ["# Claims tested in the converged small setting", "",
             "Generated by `python -m prunelab.report` from the committed runs and `conf/claims/*.yaml`; do not edit.",
             "Arms are paired by seed; the difference is b − a in test top-1 points with its 95 % t interval. Verdict "
             "(src/prunelab/stats.py): **reproduced** when the whole interval lies on the claim's side of the rule's "
             "bound, **not reproduced** when it lies on the other side, **inconclusive** otherwise.", ""]
    for paper in papers:
        notes = f" ([notes]({paper.notes}))" if paper.notes else ""
        lines += [f"## {paper.paper}{notes}", "",
                  "| claim | source | a: mean ± std (n) | b: mean ± std (n) | rule | paired difference [95 % CI] | "
                  "verdict | table |", "|---|---|---|---|---|---|---|---|"]
        for claim in paper.claims:
            lines.append(_row(evaluate(runs, claim)))
        lines.append("")
    return "\n".join(lines)


def _row(result: Verdict) -> str:
    claim = result.claim
    table = f"[{claim.table}](tables/{claim.table}.md)" if claim.table else ""
    if claim.untestable:
        cells = [claim.claim, claim.source, "", "", "", claim.untestable, "**not tested**", table]
    else:
        a, b = _mean_std(result.arms["a"]), _mean_std(result.arms["b"])
        if claim.versus is not None:
            a += f"; a′ {_mean_std(result.arms['versus.a'])}"
            b += f"; b′ {_mean_std(result.arms['versus.b'])}"
        diff = "" if result.result is None else \
            f"{result.result.mean:+.2f} [{result.result.low:+.2f}, {result.result.high:+.2f}] (n={result.result.n})"
        cells = [claim.claim, claim.source, a, b, _rule(claim), diff, f"**{result.verdict}**", table]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
