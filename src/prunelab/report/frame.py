"""Results CSVs and `paper_numbers.csv`, loaded into tidy frames and validated.

Every problem is a `UserError` whose one line names the file, the line and the column,
e.g. ``results/runs.csv:7: column 'acc_final': expected a number, got 'n/a'``.  Rows of smoke runs
(`extra.smoke`, written under `debug=fast`) are never results: they are skipped, with one warning line per file
naming their lines.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from prunelab.errors import UserError
from prunelab.record.schema import FLOAT_FIELDS, INT_FIELDS, LATENCY_DIR, LATENCY_FIELDS, RESULT_FIELDS
from prunelab.report.methods import METHODS, is_known

log = logging.getLogger(__name__)

PAPER_NUMBERS = "paper_numbers.csv"
# folders under results/ that hold other CSVs (benchmarks, curves that drivers plot themselves)
NON_RUN_DIRS = frozenset({"bench", "curves", LATENCY_DIR, "plots", "tables"})

# string columns that a run must fill; every other string column may be empty
_REQUIRED_TEXT = ("method", "model", "dataset", "recipe", "data", "device", "git_sha")
_OPTIONAL_NUMBERS = frozenset(
    {"epochs_baseline", "epochs_finetune", "base_acc", "acc_compressed", "acc_best", "train_time_s"}
)
_ACCURACIES = frozenset({"base_acc", "acc_compressed", "acc_final", "acc_best"})
_REDUCTIONS = frozenset({"params_reduction", "macs_reduction"})

PAPER_FIELDS: tuple[str, ...] = (
    "key", "paper", "table", "method", "model", "dataset", "metric", "value", "unit",
    "qualifier", "convention", "source", "notes",
)
# metric -> units it may be quoted in ("%": percent, "pp": percentage points, K/M/B: 1e3/1e6/1e9)
METRIC_UNITS: dict[str, frozenset[str]] = {
    "acc": frozenset({"%"}),
    "acc_top5": frozenset({"%"}),
    "base_acc": frozenset({"%"}),
    "acc_drop": frozenset({"pp"}),
    "map": frozenset({"%"}),
    "miou": frozenset({"%"}),
    "macs": frozenset({"K", "M", "B"}),
    "params": frozenset({"K", "M", "B"}),
    "macs_reduction": frozenset({"%"}),
    "params_reduction": frozenset({"%"}),
}
# how a quoted number bounds the true value: "" = as printed
QUALIFIERS: dict[str, str] = {"": "", "up to": "≤", "below": "<"}
_KEY_FIELDS = ("paper", "table", "method", "model", "dataset")
_PAPER_REQUIRED = ("key", "paper", "table", "metric", "value", "unit", "source")


def _fail(path: Path, line: int, column: str, problem: str) -> NoReturn:
    raise UserError(f"{path}:{line}: column '{column}': {problem}")


def _rows(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) of a CSV whose header must hold exactly `fields`."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
            for column in fields:
                if column not in header:
                    _fail(path, 1, column, "missing from the header")
            for column in header:
                if column not in fields or header.count(column) > 1:
                    _fail(path, 1, column, "unknown or repeated column in the header")
            line = 1
            for row in reader:
                line, end = line + 1, reader.line_num
                if None in row:
                    _fail(path, line, "(after the last)", "more fields than the header has")
                for column in fields:
                    if row[column] is None:
                        _fail(path, line, column, "missing field (fewer fields than the header)")
                yield line, row
                line = end
        except (csv.Error, UnicodeDecodeError) as err:
            raise UserError(f"{path}:{max(reader.line_num, 1)}: not a readable UTF-8 CSV: {err}") from None


def _number(path: Path, line: int, column: str, text: str, integer: bool) -> float | int:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        _fail(path, line, column, f"expected {'an integer' if integer else 'a number'}, got '{text}'")
    if not math.isfinite(value):
        _fail(path, line, column, f"expected a finite number, got '{text}'")
    return value


def _json_object(text: str) -> dict[str, Any] | None:
    """`text` parsed as a JSON object, or None when it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _parse_run(path: Path, line: int, row: dict[str, str]) -> dict[str, Any]:
    """One CSV row as typed values (missing numbers as None)."""
    out: dict[str, Any] = {}
    for column in RESULT_FIELDS:
        text = row[column].strip()
        numeric = column in INT_FIELDS or column in FLOAT_FIELDS
        if not text and (column in _REQUIRED_TEXT or (numeric and column not in _OPTIONAL_NUMBERS)):
            _fail(path, line, column, "must not be empty")
        if numeric:
            value = _number(path, line, column, text, column in INT_FIELDS) if text else None
            if value is not None and column in _ACCURACIES and not 0 <= value <= 100:
                _fail(path, line, column, f"accuracy must be a percentage in [0, 100], got {text}")
            if value is not None and column in _REDUCTIONS and value > 1:
                _fail(path, line, column, f"a reduction is a fraction 1 - compressed/dense, got {text}")
            out[column] = value
        else:
            out[column] = text
    if not is_known(out["method"]):
        _fail(path, line, "method", f"unknown method '{out['method']}' (known: {', '.join(METHODS)})")
    extra = _json_object(out["extra"] or "{}")
    if extra is None:
        _fail(path, line, "extra", "expected a JSON object such as {} or {\"key\": 1}")
    out["extra"] = json.dumps(extra, sort_keys=True)
    return out


def find_result_csvs(results_dir: Path) -> list[Path]:
    """Every results CSV under `results_dir`, sorted; skips paper_numbers.csv and NON_RUN_DIRS."""
    found = []
    for path in results_dir.rglob("*.csv"):
        relative = path.relative_to(results_dir)
        if relative.parts[0] not in NON_RUN_DIRS and relative != Path(PAPER_NUMBERS):
            found.append(path)
    return sorted(found)


def load_results(paths: Iterable[Path]) -> pd.DataFrame:
    """All runs of the given CSVs, one row each (exact duplicate rows once), typed and validated; smoke runs'
    rows (`extra.smoke`) are validated, then skipped with a warning.

    Columns: `RESULT_FIELDS` (ints as nullable Int64, floats with NaN for empty cells,
    `extra` re-serialised with sorted keys) plus `source` ("file:line").
    """
    records = []
    seen: set[Path] = set()
    for path in paths:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        smoke = []
        for line, row in _rows(path, RESULT_FIELDS):
            run = _parse_run(path, line, row)
            if json.loads(run["extra"]).get("smoke"):
                smoke.append(line)
                continue
            records.append({**run, "source": f"{path}:{line}"})
        if smoke:
            log.warning("%s: skipped %d smoke-run row(s) (extra.smoke, recorded under debug=fast: never a result), "
                        "line(s) %s", path, len(smoke), ", ".join(map(str, smoke)))
    frame = pd.DataFrame.from_records(records, columns=[*RESULT_FIELDS, "source"])
    for column in RESULT_FIELDS:
        if column in INT_FIELDS:
            frame[column] = frame[column].astype("Int64")
        elif column in FLOAT_FIELDS:
            frame[column] = frame[column].astype("float64")
        else:
            frame[column] = frame[column].astype(str)
    frame["source"] = frame["source"].astype(str)
    return frame.drop_duplicates(subset=list(RESULT_FIELDS)).reset_index(drop=True)


def find_latency_csvs(results_dir: Path) -> list[Path]:
    """The latency CSVs of runs timed after training (results/latency/*.csv), sorted."""
    return sorted((results_dir / LATENCY_DIR).glob("*.csv"))


def load_latency(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """run_dir -> the latency measured after training (`extra.latency`'s form, plus `timed_on`: the machine),
    validated; a run timed twice keeps its first row."""
    timings: dict[str, dict[str, Any]] = {}
    for path in paths:
        for line, row in _rows(path, LATENCY_FIELDS):
            for column in LATENCY_FIELDS:
                if not row[column].strip():
                    _fail(path, line, column, "must not be empty")
            latency = _json_object(row["latency"])
            if latency is None or not any(k.startswith("batch_") for k in latency):
                _fail(path, line, "latency", "expected a JSON object with batch_<B> entries, as extra.latency holds")
            timings.setdefault(row["run_dir"], {**latency, "timed_on": row["device"]})
    return timings


def with_latency(runs: pd.DataFrame, timings: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """`runs` with `extra.latency` filled from `timings` (by run_dir) where a run recorded none of its own."""
    def filled(run_dir: str, extra: str) -> str:
        values = json.loads(extra)
        if values.get("latency") or run_dir not in timings:
            return extra
        return json.dumps({**values, "latency": timings[run_dir]}, sort_keys=True)

    out = runs.copy()
    out["extra"] = [filled(d, e) for d, e in zip(out["run_dir"], out["extra"], strict=True)]
    return out


def as_key(value: Any) -> str:
    """A value as the text used to match and group (strings as they are, others as JSON)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def extra_values(frame: pd.DataFrame, key: str) -> pd.Series:
    """Values of `extra[key]` per run, as grouping text ("" where the key is absent)."""
    return frame["extra"].map(lambda text: as_key(json.loads(text).get(key, "")))


def load_paper_numbers(path: Path) -> pd.DataFrame:
    """The numbers quoted from papers, validated: one metric per row, unique per (key, metric).

    `value` is parsed to float; `value_text` keeps the digits as printed in the paper.
    """
    records = []
    first: dict[str, dict[str, str]] = {}
    lines: dict[tuple[str, str], int] = {}
    for line, row in _rows(path, PAPER_FIELDS):
        row = {column: text.strip() for column, text in row.items()}
        for column in _PAPER_REQUIRED:
            if not row[column]:
                _fail(path, line, column, "must not be empty")
        metric, unit = row["metric"], row["unit"]
        if metric not in METRIC_UNITS:
            _fail(path, line, "metric", f"unknown metric '{metric}' (known: {', '.join(METRIC_UNITS)})")
        if unit not in METRIC_UNITS[metric]:
            units = " or ".join(sorted(METRIC_UNITS[metric]))
            _fail(path, line, "unit", f"'{metric}' is quoted in {units}, got '{unit}'")
        if row["qualifier"] not in QUALIFIERS:
            _fail(path, line, "qualifier", f"expected one of {sorted(QUALIFIERS)}, got '{row['qualifier']}'")
        value = _number(path, line, "value", row["value"], integer=False)
        if (row["key"], metric) in lines:
            _fail(path, line, "metric", f"'{metric}' of '{row['key']}' already on line {lines[row['key'], metric]}")
        lines[row["key"], metric] = line
        reference = first.setdefault(row["key"], row)
        for column in _KEY_FIELDS:
            if row[column] != reference[column]:
                _fail(path, line, column, f"differs from earlier rows of key '{row['key']}'")
        records.append({**row, "value": value, "value_text": row["value"]})
    frame = pd.DataFrame.from_records(records, columns=[*PAPER_FIELDS, "value_text"])
    return frame.astype({column: str for column in frame.columns if column != "value"}).astype({"value": "float64"})
