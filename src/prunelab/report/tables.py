"""Paper tables: runs grouped into rows (mean ± std over seeds) beside the papers' own numbers.

`summarize` gives the numbers (one row per table line); `render_markdown` and `render_latex`
print them.  A table line is one of three kinds:

- ``run``: a group of runs (equal values in `TableSpec.keys`), joined with the paper row(s)
  of every declared row whose `match` it meets (one line per paper key);
- ``missing``: a declared row with `match` that no run meets yet (the paper's numbers alone);
- ``reference``: a declared row without `match` (a paper's number shown for comparison).

Runs of different code versions that share a group are averaged; the `git` column lists
every commit in the group (add ``git_sha`` to `group_by` to split them instead).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from prunelab.report.frame import QUALIFIERS, extra_values
from prunelab.report.selection import column as values_of, keep_chosen
from prunelab.report.spec import COLUMN_LABELS, TableSpec
from prunelab.stats import paired

# paper metric -> summary column
PAPER_COLUMNS: dict[str, str] = {
    "acc": "paper_acc",
    "base_acc": "paper_base_acc",
    "params": "paper_params",
    "macs": "paper_macs",
    "params_reduction": "paper_params_red",
    "macs_reduction": "paper_macs_red",
}
# gap column -> (ours, paper's)
GAPS: dict[str, tuple[str, str]] = {
    "gap_acc": ("acc", "paper_acc"),
    "gap_params_red": ("params_red", "paper_params_red"),
    "gap_macs_red": ("macs_red", "paper_macs_red"),
}
_SCALE = {"%": 1.0, "pp": 1.0, "K": 1e3, "M": 1e6, "B": 1e9}
_TEXT_COLUMNS = frozenset(
    {"method", "model", "dataset", "target", "recipe", "data", "device", "git", "paper", "epochs"}
)
_TEX_SYMBOLS = {"±": r"$\pm$", "—": "--", "Δ": r"$\Delta$", "↓": r"$\downarrow$", "≤": r"$\leq$"}


def mean_std(frame: pd.DataFrame, by: Iterable[str], column: str) -> pd.DataFrame:
    """Mean, sample std (NaN for a single value) and count of `column` per group of `by`."""
    grouped = frame.groupby(list(by), sort=True, dropna=False)[column]
    return grouped.agg(mean="mean", std="std", count="count").reset_index()


def _as_text(series: pd.Series) -> pd.Series:
    return series.astype("string").fillna("").astype(str)


def _short_sha(sha: str) -> str:
    return re.sub(r"^([0-9a-f]{7})[0-9a-f]*", r"\1", sha)


def _joined(values: pd.Series) -> str:
    return ",".join(sorted({str(v) for v in values.dropna() if str(v)}))


ROUNDS = "+rounds ep"  # a rule-stopped run's method phase in its recipe label, until `stopped_at` counts it


def recipe_labels(runs: pd.DataFrame, epochs: bool = True) -> pd.Series:
    """The recipe as grouped and shown: trainer name plus epochs, "hrankplus_finetune (200+150 ep)".

    Epochs are part of it, so a short run on the same recipe file (overridden `epochs`) is never
    averaged with a full one; the numbers are dense-baseline + method-phase epochs.  Without `epochs` (a table
    of methods that stop by a rule, `recipe_epochs: false`) the method phase groups as "+rounds" and is shown
    as the epochs the group's runs took (`stopped_at`).
    """
    def label(row: pd.Series) -> str:
        if not epochs:
            return f"{row['recipe']} ({int(row['epochs_baseline'])}{ROUNDS})"
        epochs_ = [str(int(v)) for v in (row["epochs_baseline"], row["epochs_finetune"]) if pd.notna(v)]
        return f"{row['recipe']} ({'+'.join(epochs_)} ep)" if epochs_ else str(row["recipe"])

    return runs.apply(label, axis=1) if len(runs) else runs["recipe"]


def stopped_at(recipe: str, epochs: str) -> str:
    """A rule-stopped group's recipe with the method-phase epochs its runs took ("4,5" of `_joined`):
    "basis_adam (30+rounds ep)" becomes "basis_adam (30+4-5 ep)", or "(30+5 ep)" when every run took 5."""
    counts = sorted(int(float(e)) for e in epochs.split(",") if e)
    if not counts:
        return recipe
    span = str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
    return recipe.replace(f"{ROUNDS})", f"+{span} ep)")


def select_runs(runs: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The runs of a table, with `extra.<key>` columns and per-run `acc`, `delta` and reductions (%)."""
    frame = runs.copy()
    for column in dict.fromkeys([*spec.where, *spec.group_by]):
        if column.startswith("extra."):
            frame[column] = extra_values(frame, column.removeprefix("extra."))
    keep = pd.Series(True, index=frame.index)
    for column, values in spec.where.items():
        keep &= _as_text(frame[column]).isin(values)
    frame = frame[keep].copy()
    frame["recipe"] = recipe_labels(frame, spec.recipe_epochs)
    frame["acc"] = frame["acc_final"]
    frame["val"] = values_of(frame, "extra.acc_val")
    frame["delta"] = frame["acc_final"] - frame["base_acc"]
    params, macs = frame[spec.params].astype("float64"), frame["macs"].astype("float64")
    if spec.counts == "nominal":  # e.g. LRPET: every layer at its planned rank, as its README counts
        params = _nominal(frame, f"nominal_{spec.params}", params)
        macs = _nominal(frame, "nominal_macs", macs)
    frame["params_count"], frame["macs"] = params, macs
    frame["params_red"] = 100 * (1 - params / frame[f"base_{spec.params}"].astype("float64"))
    frame["macs_red"] = 100 * (1 - macs / frame["base_macs"].astype("float64"))
    frame["macs_speedup"] = frame["base_macs"].astype("float64") / macs
    frame["speedup"] = frame["extra"].map(measured_speedup).astype("float64")
    return frame


def measured_speedup(extra: str) -> float:
    """Dense / compressed inference time at the largest batch the run timed (extra.latency), NaN if untimed."""
    latency = json.loads(extra).get("latency") or {}
    batches = sorted(int(k.removeprefix("batch_")) for k in latency if k.startswith("batch_"))
    return float(latency[f"batch_{batches[-1]}"]["speedup"]) if batches else math.nan


def _nominal(frame: pd.DataFrame, key: str, fallback: pd.Series) -> pd.Series:
    """extra[key] of each run, its `fallback` count where the method records none."""
    values = frame["extra"].map(lambda text: json.loads(text).get(key))
    return values.astype("float64").fillna(fallback)


def table_runs(runs: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The runs a table's lines average (`select_runs`, key columns as text), each group at its chosen value."""
    frame = select_runs(runs, spec)
    for column in spec.keys:
        frame[column] = _as_text(frame[column])
    if spec.select is not None:
        frame = keep_chosen(frame, [k for k in spec.keys if k != spec.select.among], spec.select)
    return frame


def _group_stats(runs: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    frame = table_runs(runs, spec)
    keys = list(spec.keys)
    frame["git"] = frame["git_sha"].map(_short_sha)
    stats = frame.groupby(keys, sort=True, dropna=False).agg(
        seeds=("seed", "nunique"),
        runs=("seed", "size"),
        acc=("acc", "mean"),
        acc_std=("acc", "std"),
        val=("val", "mean"),
        acc_compressed=("acc_compressed", "mean"),
        acc_compressed_std=("acc_compressed", "std"),
        acc_best=("acc_best", "mean"),
        base_acc=("base_acc", "mean"),
        delta=("delta", "mean"),
        params=("params_count", "mean"),
        params_red=("params_red", "mean"),
        macs=("macs", "mean"),
        macs_red=("macs_red", "mean"),
        macs_speedup=("macs_speedup", "mean"),
        speedup=("speedup", "mean"),
        epochs=("epochs_finetune", _joined),
        git=("git", _joined),
    ).reset_index()
    inner = _inner_rows(stats, [k for k in keys if spec.select is None or k != spec.select.among])  # each at its lr
    stats["gain"] = [row - stats["acc"].iloc[i] if i is not None else math.nan for row, i in zip(stats["acc"], inner)]
    accs = {key: dict(zip(group["seed"].astype(int), group["acc"])) for key, group in frame.groupby(keys, sort=True,
                                                                                                   dropna=False)}
    groups = [accs[tuple(row[k] for k in keys)] for row in stats.to_dict("records")]
    stats["gain_ci"] = [_paired_text(groups[i], groups[j]) if i is not None else "" for j, i in enumerate(inner)]
    if not spec.recipe_epochs:  # grouped across epoch counts above; shown with the counts the runs took
        stats["recipe"] = [stopped_at(r, e) for r, e in zip(stats["recipe"], stats["epochs"])]
    return stats


def _paired_text(a: dict[int, float], b: dict[int, float]) -> str:
    """b - a paired by seed: "mean [low, high]" (95 % t interval), empty with fewer than two common seeds."""
    if len(set(a) & set(b)) < 2:
        return ""
    return paired(a, b).text()


def _inner_rows(stats: pd.DataFrame, keys: list[str]) -> list[int | None]:
    """For each row of a composed method `outer(inner)`, the index of its inner method's row with all other
    keys equal and the inner target (the end of the composed target): gain = what the outer step adds."""
    others = [k for k in keys if k not in ("method", "target")]
    rows = stats.to_dict("records")
    by_key: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        by_key.setdefault((row["method"], *(row[k] for k in others)), []).append(i)
    out: list[int | None] = []
    for row in rows:
        outer, paren, inner = row["method"].partition("(")
        candidates = by_key.get((inner[:-1], *(row[k] for k in others)), []) if paren else []
        candidates = [c for c in candidates if row["target"].endswith(rows[c]["target"])]
        out.append(max(candidates, key=lambda c: len(rows[c]["target"]), default=None))
    return out


def _matches(match: dict[str, tuple[str, ...]], line: dict[str, Any]) -> bool:
    return all(line[column] in values for column, values in match.items())


def _lines(stats: pd.DataFrame, spec: TableSpec, paper: pd.DataFrame) -> list[dict[str, Any]]:
    """Table lines in order: declared rows first (in config order), then unmatched groups."""
    ordered: list[tuple[tuple[int, int], dict[str, Any]]] = []
    used: set[int] = set()
    for position, group in enumerate(stats.to_dict("records")):
        hits: dict[str, int] = {}  # paper key -> first declared row that pairs it with this group
        for i, row in enumerate(spec.rows):
            if row.match and _matches(row.match, group):
                used.add(i)
                for key in row.paper or ("",):
                    hits.setdefault(key, i)
        for key, i in (hits or {"": len(spec.rows)}).items():
            ordered.append(((i, position), {**group, "kind": "run", "paper": key}))
    identity = paper.drop_duplicates("key").set_index("key")[["method", "model", "dataset"]]
    for i, row in enumerate(spec.rows):
        if i in used:
            continue
        for key in row.paper or ("",):
            known = identity.loc[key].to_dict() if key else {}
            if row.match:  # the run we lack: what `match` fixes, model and dataset of the paper row
                known = {"model": known.get("model", ""), "dataset": known.get("dataset", "")}
                known.update({column: values[0] for column, values in row.match.items() if len(values) == 1})
            ordered.append(((i, -1), {**known, "kind": "missing" if row.match else "reference", "paper": key}))
    return [line for _, line in sorted(ordered, key=lambda item: item[0])]


def _paper_values(paper: pd.DataFrame) -> dict[tuple[str, str], tuple[float, str]]:
    """(key, metric) -> (value in table units, NaN if only a bound; text as printed)."""
    values = {}
    for row in paper.itertuples(index=False):
        scale = _SCALE[row.unit] if row.metric in ("params", "macs") else 1.0
        exact = row.value * scale if not row.qualifier else math.nan
        unit = row.unit if row.unit in ("K", "M", "B") else ""
        values[row.key, row.metric] = (exact, f"{QUALIFIERS[row.qualifier]}{row.value_text}{unit}")
    return values


def summarize(runs: pd.DataFrame, spec: TableSpec, paper: pd.DataFrame) -> pd.DataFrame:
    """The numbers of one table, one row per line.

    Accuracies, reductions and `delta` are in percent; gaps (ours − paper) in percentage points;
    `params`/`macs` and `paper_params`/`paper_macs` are counts.  `paper_<x>_text` holds the
    paper's figure as printed (with ≤/< for bounds, whose numeric column stays empty).
    """
    stats = _group_stats(runs, spec)
    lines = _lines(stats, spec, paper)
    columns = [*spec.keys, "kind", *stats.columns.difference([*spec.keys], sort=False), "paper"]
    out = pd.DataFrame.from_records(lines, columns=list(dict.fromkeys(columns)))
    values = _paper_values(paper)
    for metric, column in PAPER_COLUMNS.items():
        found = [values.get((key, metric), (math.nan, "")) for key in out["paper"]]
        out[column] = pd.Series([v for v, _ in found], index=out.index, dtype="float64")
        out[f"{column}_text"] = pd.Series([t for _, t in found], index=out.index, dtype=str)
    for gap, (ours, theirs) in GAPS.items():
        out[gap] = out[ours].astype("float64") - out[theirs]
    text = [*spec.keys, "kind", "paper", "git", "epochs", "gain_ci", *(f"{c}_text" for c in PAPER_COLUMNS.values())]
    for column in out.columns:
        out[column] = out[column].fillna("").astype(str) if column in text else out[column].astype("float64")
    return out


def number_text(value: float, digits: int, signed: bool = False) -> str:
    """`value` with `digits` decimals (a sign with `signed`), empty for NaN: a table cell."""
    if math.isnan(value):
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _count(value: float) -> str:
    """A parameter or MAC count as papers print it: 0.85M, 125.49M, 4.11B."""
    if math.isnan(value):
        return ""
    for threshold, scale, suffix in ((1e9, 1e9, "B"), (1e5, 1e6, "M"), (1e3, 1e3, "K")):
        if value >= threshold:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.2f} ± {'—' if math.isnan(std) else f'{std:.2f}'}"


def _seeds(line: pd.Series) -> str:
    if line["kind"] != "run":
        return "0" if line["kind"] == "missing" else ""
    seeds, runs = int(line["seeds"]), int(line["runs"])
    return f"{seeds}" if seeds == runs else f"{seeds} ({runs} runs)"


_FORMATS: dict[str, Callable[[pd.Series], str]] = {
    "seeds": _seeds,
    "acc": lambda r: _mean_std(r["acc"], r["acc_std"]),
    "acc_compressed": lambda r: _mean_std(r["acc_compressed"], r["acc_compressed_std"]),
    "acc_best": lambda r: number_text(r["acc_best"], 2),
    "val": lambda r: number_text(r["val"], 2),
    "base_acc": lambda r: number_text(r["base_acc"], 2),
    "delta": lambda r: number_text(r["delta"], 2, signed=True),
    "gain": lambda r: number_text(r["gain"], 2, signed=True),
    "gain_ci": lambda r: r["gain_ci"],
    "params": lambda r: _count(r["params"]),
    "macs": lambda r: _count(r["macs"]),
    "params_red": lambda r: number_text(r["params_red"], 1),
    "macs_red": lambda r: number_text(r["macs_red"], 1),
    "macs_speedup": lambda r: number_text(r["macs_speedup"], 2),
    "speedup": lambda r: number_text(r["speedup"], 2),
    "gap_acc": lambda r: number_text(r["gap_acc"], 2, signed=True),
    "gap_params_red": lambda r: number_text(r["gap_params_red"], 1, signed=True),
    "gap_macs_red": lambda r: number_text(r["gap_macs_red"], 1, signed=True),
    **{column: (lambda r, c=column: r[f"{c}_text"]) for column in PAPER_COLUMNS.values()},
}


def _display_columns(spec: TableSpec) -> list[str]:
    """The columns a table shows, in order: the `group_by` columns follow `target`."""
    columns = list(spec.columns)
    at = columns.index("target") + 1 if "target" in columns else 0
    columns[at:at] = spec.group_by
    return columns


# the default (compact) view: these of a table's columns, the measured speed-up, and a setup footnote
COMPACT = ("method", "model", "dataset", "target", "val", "acc", "acc_compressed", "gain", "gain_ci", "paper_acc", "delta",
           "params_red", "macs_red")
SETUP = ("recipe", "data", "device", "git")


def compact_columns(summary: pd.DataFrame, spec: TableSpec) -> list[str]:
    """The compact view's columns: method, target, the group_by columns, accuracies, reductions, the measured
    speed-up; model and dataset only where they vary within the table."""
    columns = [c for c in _display_columns(spec) if c in COMPACT or c in spec.group_by]
    varying = [c for c in ("model", "dataset") if summary[c].replace("", pd.NA).dropna().nunique() > 1]
    return [c for c in columns if c not in ("model", "dataset") or c in varying] + ["speedup", "setup"]


def _acc_with_seeds(line: pd.Series) -> str:
    text = _mean_std(line["acc"], line["acc_std"])
    seeds = _seeds(line)
    return f"{text} ({seeds})" if text and seeds else text


def _setups(summary: pd.DataFrame) -> tuple[list[str], list[str]]:
    """A footnote mark per table line (empty for the paper's rows) and the footnotes, one per distinct setup."""
    marks, notes, seen = [], [], {}
    for _, line in summary.iterrows():
        if line["kind"] != "run":
            marks.append("")
            continue
        setup = " · ".join(f"{c} {line[c]}" for c in SETUP if line[c])
        if setup not in seen:
            seen[setup] = len(seen) + 1
            notes.append(f"[{seen[setup]}] {setup}")
        marks.append(f"[{seen[setup]}]")
    return marks, notes


def _label(column: str) -> str:
    return COLUMN_LABELS.get(column, column.removeprefix("extra."))


def display_frame(summary: pd.DataFrame, spec: TableSpec, wide: bool = True) -> pd.DataFrame:
    """The table as text cells under their headers: every declared column (`wide`), or the compact view."""
    columns = _display_columns(spec) if wide else compact_columns(summary, spec)
    cells = {}
    for column in columns:
        if column == "setup":
            cells["setup"] = _setups(summary)[0]
            continue
        formatter = _FORMATS.get(column, lambda r, c=column: r[c])
        if not wide and column == "acc":
            formatter = _acc_with_seeds
        elif not wide and column in ("params_red", "macs_red"):  # the paper's own rows show the paper's reduction
            formatter = lambda r, c=column, f=formatter: (  # noqa: E731
                f(r) if r["kind"] == "run" else number_text(r[f"paper_{c}"], 1))
        cells[_label(column)] = [formatter(line) for _, line in summary.iterrows()]
    return pd.DataFrame(cells, columns=list(cells), dtype=str)


def _paper_sources(summary: pd.DataFrame, paper: pd.DataFrame) -> list[str]:
    """One line per source: the source, then the keys of this table quoted from it."""
    sources = paper.drop_duplicates("key").set_index("key")["source"]
    keys: dict[str, list[str]] = {}
    for key in dict.fromkeys(k for k in summary["paper"] if k):
        keys.setdefault(sources[key], []).append(f"`{key}`")
    return [f"- {source}: {', '.join(listed)}" for source, listed in keys.items()]


def render_markdown(summary: pd.DataFrame, spec: TableSpec, paper: pd.DataFrame, wide: bool = False) -> str:
    """The table as a Markdown page: title, conventions, the table, notes and paper sources.  The default
    view is compact (setup as footnotes, `<name>-wide.md` links the full one); `wide` shows every column."""
    params = "parameters counting BatchNorm" if spec.params == "params" else "parameters without BatchNorm"
    cells = display_frame(summary, spec, wide).map(lambda s: s.replace("|", r"\|").replace("*", r"\*"))
    parts = [f"# {spec.title}", ""]
    if spec.source:
        parts += [f"Paper: {spec.source}", ""]
    parts += [
        f"Generated by `python -m prunelab.report` from the recorded runs; edit `conf/tables/{spec.name}.yaml`,"
        " not this file.",
        "",
        f"- One row per ({', '.join(k.removeprefix('extra.') for k in spec.keys)}): runs of different recipes"
        " (trainer config with its dense-baseline + method epochs), data or devices are never averaged together;"
        " `git` lists the commits a row averages.",
        "- acc: top-1 % on the test split after the final epoch, mean ± sample std over seeds (— for one seed);"
        " Δ acc = acc − base acc (the dense baseline, or the method's own unpruned reference where it measures one).",
        f"- params: {params}; MACs: conv + linear multiply-accumulates (the papers' \"FLOPs\");"
        " ↓: reduction 1 − compressed/dense in %; gap: ours − paper in percentage points.",
        "- data: dataset[train(+validation) images/test images] the runs loaded ({classes}: a class subset, @R: resized"
        " to R pixels); seeds 0: declared but not run yet;"
        " no seeds: the paper's number alone.",
        "- measured ×: dense / compressed inference time at the largest batch the run timed (`extra.latency`;"
        " deploy form, BatchNorm folded); empty where a run was not timed. MACs ×: dense / compressed MACs.",
        "",
        cells.to_markdown(index=False, disable_numparse=True),
    ]
    if not wide:
        parts += ["", *(f"{note}  " for note in _setups(summary)[1]),
                  "", f"Every column: [{spec.name}-wide.md]({spec.name}-wide.md)."]
    notes = list(spec.notes)
    if not (summary["kind"] == "run").any():
        notes.append("No recorded run matches this table yet.")
    if summary["git"].str.contains(",").any():
        notes.append("Rows whose `git` lists several commits average runs of different code versions.")
    if notes:
        parts += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    sources = _paper_sources(summary, paper)
    if sources:
        parts += ["", "Paper rows (conventions and reading notes in results/paper_numbers.csv):", "", *sources]
    return "\n".join(parts) + "\n"


def render_latex(summary: pd.DataFrame, spec: TableSpec) -> str:
    """The table as a booktabs `tabular` (conventions and notes are in the Markdown page)."""
    cells = display_frame(summary, spec)
    align = "".join("l" if c in _TEXT_COLUMNS or c in spec.group_by else "r" for c in _display_columns(spec))
    styler = cells.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    tex = styler.to_latex(hrules=True, column_format=align)
    for symbol, command in _TEX_SYMBOLS.items():
        tex = tex.replace(symbol, command)
    return f"% {spec.title}\n% Generated by `python -m prunelab.report`; see {spec.name}.md for conventions.\n{tex}"
