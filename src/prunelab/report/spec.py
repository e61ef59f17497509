"""Table configs: which runs make up a paper table, how they group, and which paper rows they face.

One YAML file per table under ``conf/tables/`` (the file name is the table name)::

    title: ResNet-56 on CIFAR-10 (Someone et al., arXiv:0000.00000, Table 1)
    params: params            # params column: params (BatchNorm counted) or params_no_bn
    where:                    # runs in the table: every key must match (a list = any of)
      experiment: my_experiment
    group_by: [extra.bn_rectify]   # grouping keys besides GROUP_COLUMNS (columns or extra.<key>)
    select: {among: extra.lr, by: extra.acc_val, seed: 0}   # optional: per group, keep the group_by value
                              # `among` whose seed-0 run scores best on the validation split (report/selection.py)
    standings: extra.budget_asked   # optional: a group_by key; within each of its values every line is paired
                              # with the best on validation (report/standings.py, tables/<name>-standings.md)
    rows:                     # table order; a row with `match` selects runs, one without is the paper alone
      - match: {method: nuclear, model: resnet56, target: "ratio=0.5"}
        paper: somepaper:cifar10:resnet56      # key(s) in results/paper_numbers.csv
      - paper: otherpaper:cifar10:resnet56
    columns: [method, model, acc, paper_acc, gap_acc]   # optional, default DEFAULT_COLUMNS
    plots: [macs, params]     # macs / params: accuracy vs reduction; criteria: before/after fine-tuning
    notes: ["free text printed under the table"]

Values are compared as text; quote targets such as "[0.]+[0.18]*29" (YAML reads brackets as lists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from prunelab.errors import UserError, one_line
from prunelab.record.schema import RESULT_FIELDS
from prunelab.report.frame import as_key
from prunelab.report.selection import Selection

# every table row is one group of runs with equal values in these columns (plus `group_by`)
GROUP_COLUMNS: tuple[str, ...] = ("method", "model", "dataset", "target", "recipe", "data", "device")
PARAMS_COLUMNS = ("params", "params_no_bn")
PLOTS = ("macs", "params", "criteria", "rate", "pareto_macs", "pareto_latency")  # rate: accuracy against the
# target's rate=..., a line per the rest; pareto_*: accuracy against MACs or measured time kept, one line per method

# the columns a table may show, with their headers ("pp" = percentage points)
COLUMN_LABELS: dict[str, str] = {
    "method": "method",
    "model": "model",
    "dataset": "dataset",
    "target": "target",
    "recipe": "recipe",
    "data": "data",
    "seeds": "seeds",
    "acc": "acc %",
    "paper_acc": "paper acc %",
    "gap_acc": "gap acc pp",
    "acc_compressed": "acc pruned %",
    "acc_best": "acc best %",
    "val": "val acc %",
    "base_acc": "base acc %",
    "paper_base_acc": "paper base %",
    "delta": "Δ acc pp",
    "gain": "gain pp",
    "gain_ci": "paired gain pp [95 % CI]",
    "params": "params",
    "paper_params": "paper params",
    "params_red": "params ↓ %",
    "paper_params_red": "paper params ↓ %",
    "gap_params_red": "gap params ↓ pp",
    "macs": "MACs",
    "paper_macs": "paper MACs",
    "macs_red": "MACs ↓ %",
    "paper_macs_red": "paper MACs ↓ %",
    "gap_macs_red": "gap MACs ↓ pp",
    "macs_speedup": "MACs ×",
    "speedup": "measured ×",
    "epochs": "epochs",
    "device": "device",
    "git": "git",
    "paper": "paper row",
}
DEFAULT_COLUMNS: tuple[str, ...] = (
    "method", "model", "dataset", "target", "recipe", "data", "seeds",
    "acc", "paper_acc", "gap_acc", "base_acc", "paper_base_acc", "delta",
    "params", "paper_params", "params_red", "paper_params_red", "gap_params_red",
    "macs", "paper_macs", "macs_red", "paper_macs_red", "gap_macs_red",
    "device", "git", "paper",
)
_KEYS = frozenset({"title", "source", "params", "counts", "where", "group_by", "select", "rows", "columns", "plots",
                   "notes", "recipe_epochs", "standings"})
COUNTS = ("export", "nominal")


@dataclass(frozen=True)
class RowSpec:
    """One declared table row: runs matching `match` face the paper rows `paper`."""

    match: dict[str, tuple[str, ...]]  # empty: a reference row (the paper's numbers alone)
    paper: tuple[str, ...]


@dataclass(frozen=True)
class TableSpec:
    """A paper table, as declared in conf/tables/<name>.yaml."""

    name: str
    title: str
    params: str
    source: str = ""
    where: dict[str, tuple[str, ...]] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()
    rows: tuple[RowSpec, ...] = ()
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    plots: tuple[str, ...] = ("macs", "params")
    notes: tuple[str, ...] = ()
    counts: str = "export"  # export: the final model's counts | nominal: a method's extra.nominal_* where it has them
    select: Selection | None = None  # keep only the value of a swept key chosen on the validation split
    recipe_epochs: bool = True  # false: runs whose method stops by a rule (pruning rounds) group across epoch counts
    standings: str = ""  # a group_by key: the standings page within each of its values (report/standings.py)

    @property
    def keys(self) -> tuple[str, ...]:
        """The grouping columns of this table."""
        return (*GROUP_COLUMNS, *self.group_by)


def _is_column(name: str) -> bool:
    return name in RESULT_FIELDS or (name.startswith("extra.") and len(name) > len("extra."))


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(as_key(v) for v in value) if isinstance(value, list) else (as_key(value),)


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: expected a list of strings")
    return tuple(value)


def _conditions(where: str, value: Any, allowed: tuple[str, ...] | None) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping of column -> value or list of values")
    for column in value:
        if allowed is not None and column not in allowed:
            raise UserError(f"{where}: '{column}' is not a grouping column ({', '.join(allowed)})")
        if not _is_column(column):
            raise UserError(f"{where}: unknown column '{column}'")
    return {column: _texts(v) for column, v in value.items()}


def _rows(where: str, value: Any, keys: tuple[str, ...], paper_keys: set[str]) -> tuple[RowSpec, ...]:
    if not isinstance(value, list):
        raise UserError(f"{where}: expected a list of rows")
    rows = []
    for i, row in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(row, dict) or set(row) - {"match", "paper"} or ("match" not in row and "paper" not in row):
            raise UserError(f"{at}: expected a mapping with 'match' and/or 'paper'")
        paper = row.get("paper", [])
        paper = _strings(f"{at}.paper", paper if isinstance(paper, list) else [paper])
        for key in paper:
            if key not in paper_keys:
                raise UserError(f"{at}.paper: unknown paper key '{key}' (not in paper_numbers.csv)")
        rows.append(RowSpec(_conditions(f"{at}.match", row.get("match", {}), keys), paper))
    return tuple(rows)


def load_table_spec(path: Path, paper_keys: set[str]) -> TableSpec:
    """Read and check one table config; `paper_keys` are the keys of paper_numbers.csv."""
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, YAMLError, OmegaConfBaseException) as err:
        raise UserError(f"{path}: cannot read: {one_line(err)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    for key in raw:
        if key not in _KEYS:
            raise UserError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(_KEYS))})")
    for key in ("title", "params"):
        if not isinstance(raw.get(key), str):
            raise UserError(f"{path}: '{key}' is required and must be a string")
    if raw["params"] not in PARAMS_COLUMNS:
        raise UserError(f"{path}: params: expected one of {', '.join(PARAMS_COLUMNS)}, got '{raw['params']}'")
    if raw.get("counts", "export") not in COUNTS:
        raise UserError(f"{path}: counts: expected one of {', '.join(COUNTS)}, got '{raw['counts']}'")
    group_by = _strings(f"{path}: group_by", raw.get("group_by", []))
    for column in group_by:
        if not _is_column(column) or column in GROUP_COLUMNS:
            raise UserError(f"{path}: group_by: '{column}' is not a column, an extra.<key>, or is grouped already")
    columns = _strings(f"{path}: columns", raw.get("columns", list(DEFAULT_COLUMNS)))
    plots = _strings(f"{path}: plots", raw.get("plots", list(TableSpec.plots)))
    for name, known, given in (("columns", COLUMN_LABELS, columns), ("plots", PLOTS, plots)):
        for item in given:
            if item not in known:
                raise UserError(f"{path}: {name}: unknown '{item}' (known: {', '.join(known)})")
    keys = (*GROUP_COLUMNS, *group_by)
    select = _selection(f"{path}: select", raw.get("select"), group_by)
    standings = str(raw.get("standings", ""))
    if standings and (standings not in group_by or select is not None and standings == select.among):
        raise UserError(f"{path}: standings: expected one of group_by other than select's among, got '{standings}'")
    return TableSpec(
        name=path.stem,
        title=raw["title"],
        params=raw["params"],
        counts=raw.get("counts", "export"),
        source=str(raw.get("source", "")),
        where=_conditions(f"{path}: where", raw.get("where", {}), None),
        group_by=group_by,
        rows=_rows(f"{path}: rows", raw.get("rows", []), keys, paper_keys),
        columns=columns,
        plots=plots,
        notes=_strings(f"{path}: notes", raw.get("notes", [])),
        select=select,
        recipe_epochs=bool(raw.get("recipe_epochs", True)),
        standings=standings,
    )


def _selection(where: str, value: Any, group_by: tuple[str, ...]) -> Selection | None:
    """`select: {among: extra.lr, by: extra.acc_val, seed: 0}`: `among` must be one of the group_by keys."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"among", "by", "seed"} or "among" not in value:
        raise UserError(f"{where}: expected a mapping with among (a group_by key), by and seed, got {value!r}")
    selection = Selection(str(value["among"]), str(value.get("by", Selection.by)), int(value.get("seed", 0)))
    if selection.among not in group_by or not _is_column(selection.by):
        raise UserError(f"{where}: among must be one of group_by ({', '.join(group_by) or 'none'}) and by a column "
                        f"or extra.<key>, got among={selection.among}, by={selection.by}")
    return selection


def load_table_specs(tables_dir: Path, paper_keys: set[str]) -> list[TableSpec]:
    """Every `*.yaml` table config in `tables_dir`, sorted by name."""
    return [load_table_spec(path, paper_keys) for path in sorted(tables_dir.glob("*.yaml"))]
