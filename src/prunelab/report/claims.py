"""The verdict page (results/claims.md): each paper's claims, tested on recorded runs by a stated rule.

One YAML file per paper under ``conf/claims/``::

    paper: Boosting Pruned Networks with Linear Over-parameterization (arXiv:2204.11444)
    short: Linear over-parameterization   # optional: the paper's name in the summary table
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
        metric: acc_final              # optional: the column compared (acc_compressed, params_reduction, ...)
        table: lop_cifar10             # the table the numbers come from (a link)
      - id: ...
        b: {csv: results/curves/x.csv, metric: spearman, criterion: nuclear}   # an arm read from another CSV
        threshold: 0.9                 # one-sample: b's values against a constant (no arm a)
      - id: ...
        untestable: why this setting cannot test it   # a row with its reason instead of numbers

Arms match runs by column values (compared as text); the metric is the claim's `metric` (default `acc_final`,
test top-1, %), or the arm's own `metric` (e.g. `base_acc`, the unpruned reference recorded in the same run).
An arm with `csv` reads that file (relative to the repository root; it needs a `seed` column) instead of the
runs.  Runs are paired by seed (prunelab/stats.py: mean difference, 95 % t interval, verdict: reproduced / not
reproduced / inconclusive; fewer than two pairs: "too few runs"); a `threshold` claim pairs b with the constant.
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
                         "untestable", "metric", "threshold"})
METRIC = "acc_final"
ARM_KEYS = ("metric", "csv")  # keys of an arm that say where its values come from, not which runs it matches
REPO = Path(__file__).resolve().parents[3]


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
    metric: str = METRIC
    threshold: float | None = None
    table: str = ""
    untestable: str = ""


@dataclass(frozen=True)
class PaperClaims:
    paper: str
    notes: str
    claims: tuple[Claim, ...]
    short: str = ""  # the paper's name in the summary table (default: `paper`)


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
    return PaperClaims(str(raw["paper"]), str(raw.get("notes", "")), claims, str(raw.get("short", raw["paper"])))


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
    threshold = item.get("threshold")
    if threshold is not None and (item.get("a") is not None or item.get("versus") is not None):
        raise UserError(f"{where}: a threshold claim has only an arm b (its values against the constant)")
    arms = {k: _arm(f"{where}.{k}", item.get(k)) for k in (("b",) if threshold is not None else ("a", "b"))}
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
    return Claim(**common, a=arms.get("a", {}), b=arms["b"], versus=versus, select=selection, direction=direction,
                 tolerance=tolerance, metric=str(item.get("metric", METRIC)),
                 threshold=None if threshold is None else float(threshold))


def _arm(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{where}: expected a mapping of column: value that selects the arm's runs")
    return {str(k): str(v) for k, v in value.items()}


def arm_runs(runs: pd.DataFrame, arm: dict[str, str], selection: Selection | None, name: str = "",
             metric: str = METRIC) -> dict[int, float]:
    """{seed: metric} of the runs matching every column of `arm` (text), at the value `selection` keeps (the arm's
    own `metric` and `csv` keys: module docstring); two runs of one seed are refused (an arm is one run per seed:
    narrow its columns or give `select`)."""
    match = {k: v for k, v in arm.items() if k not in ARM_KEYS}
    metric = arm.get("metric", metric)
    if "csv" in arm:
        path = REPO / arm["csv"]
        if not path.is_file():
            raise UserError(f"{name}: csv {arm['csv']} does not exist (run the experiment that writes it)")
        runs, selection = pd.read_csv(path), None
    missing = sorted((set(match) | {metric, "seed"}) - set(runs.columns)) if len(runs) else []
    if missing:
        raise UserError(f"{name}: no column(s) {missing} in its rows")
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
    return {int(s): float(a) for s, a in zip(seeds, chosen[metric])}


def evaluate(runs: pd.DataFrame, claim: Claim) -> Verdict:
    """The claim's arms, paired by seed (a contrast: per seed (b - a) - (versus.b - versus.a)), and its verdict."""
    if claim.untestable:
        return Verdict(claim, {}, None, "not tested")
    matches = {"b": claim.b, **({"a": claim.a} if claim.threshold is None else {}),
               **({"versus.a": claim.versus[0], "versus.b": claim.versus[1]} if claim.versus is not None else {})}
    arms = {key: arm_runs(runs, match, claim.select, f"claim {claim.id}: arm {key}", claim.metric)
            for key, match in matches.items()}
    if claim.threshold is not None:
        arms["a"] = {seed: claim.threshold for seed in arms["b"]}
    seeds = sorted(set.intersection(*(set(v) for v in arms.values())))
    if len(seeds) < 2:
        return Verdict(claim, arms, None, "too few runs")
    first = {s: arms["a"][s] + (arms["versus.b"][s] - arms["versus.a"][s] if claim.versus else 0.0) for s in seeds}
    result = paired(first, {s: arms["b"][s] for s in seeds})
    return Verdict(claim, arms, result, verdict(result, claim.direction, claim.tolerance))


def mean_std(values: dict[int, float]) -> str:
    """ "mean ± std (n)" of the values by seed (no std for one value, "no runs" for none)."""
    if not values:
        return "no runs"
    series = pd.Series(list(values.values()), dtype="float64")
    std = "" if len(series) < 2 else f" ± {series.std():.2f}"
    return f"{series.mean():.2f}{std} ({len(series)})"


def _rule(claim: Claim) -> str:
    side = ">" if claim.direction == 1 else "<"
    bound = f"{'-' if claim.direction == 1 else ''}{claim.tolerance:g}" if claim.tolerance else "0"
    quantity = "(b − a) − (b′ − a′)" if claim.versus else "b − a"
    return f"{quantity} {side} {bound}{_metrics(claim)}"


def _metrics(claim: Claim) -> str:
    """What the rule compares when it is not test top-1: " (column)", or " (a: column; b: column)"."""
    b = claim.b.get("metric", claim.metric)
    a = b if claim.threshold is not None else claim.a.get("metric", claim.metric)
    if a == b:
        return "" if b == METRIC else f" ({b})"
    return f" (a: {a}; b: {b})"


def render_claims(papers: list[PaperClaims], runs: pd.DataFrame) -> str:
    """The markdown verdict page: one row per claim, grouped by paper."""
    lines = ["# Claims tested in the converged small setting", "",
             "Generated by `python -m prunelab.report` from the committed runs and `conf/claims/*.yaml`; do not edit.",
             "Arms are paired by seed; the difference is b − a in test top-1 points (or in the column the rule names) with its "
             "95 % t interval; a threshold claim compares b with the constant. Verdict "
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
        a = f"{claim.threshold:g} (threshold)" if claim.threshold is not None else mean_std(result.arms["a"])
        b = mean_std(result.arms["b"])
        if claim.versus is not None:
            a += f"; a′ {mean_std(result.arms['versus.a'])}"
            b += f"; b′ {mean_std(result.arms['versus.b'])}"
        diff = "" if result.result is None else \
            f"{result.result.text()} (n={result.result.n})"
        cells = [claim.claim, claim.source, a, b, _rule(claim), diff, f"**{result.verdict}**", table]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render_summary(papers: list[PaperClaims], runs: pd.DataFrame, page: str = "results/claims.md") -> str:
    """One line per claim (paper, claim, paired difference, verdict): the verdict table the README shows, linking
    to the full page."""
    lines = ["| paper | claim | paired difference [95 % CI] | verdict |", "|---|---|---|---|"]
    for paper in papers:
        for claim in paper.claims:
            result = evaluate(runs, claim)
            diff = claim.untestable if claim.untestable else "" if result.result is None else \
                f"{result.result.text()}{_metrics(claim)}"
            cells = [paper.short, claim.claim, diff, f"**{result.verdict}**"]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + f"\n\nThe arms, their spread and the rule of every row: [{page}]({page}).\n"
