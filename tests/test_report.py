"""The reporting layer on synthetic result rows: grouping, paper join, validation, regeneration."""

from __future__ import annotations

import csv
import math
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from prunelab.errors import UserError
from prunelab.record.schema import RESULT_FIELDS
from prunelab.report import build_report, load_paper_numbers, load_results, load_table_specs, summarize
from prunelab.report.__main__ import main
from prunelab.report.frame import PAPER_FIELDS, find_latency_csvs, find_result_csvs
from prunelab.report.spec import RowSpec, TableSpec
from prunelab.report.tables import display_frame, render_latex, render_markdown

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "results" / "paper_numbers.csv"
TABLES = ROOT / "conf" / "tables"

R56 = "[0.]+[0.15]*2+[0.4]*27"


def run(**fields: object) -> dict[str, str]:
    """One results-CSV row of a small nuclear-norm run; `fields` override columns."""
    row = {
        "method": "nuclear", "model": "resnet56", "dataset": "cifar10", "seed": "0", "target": R56,
        "base_params": "853018", "base_params_no_bn": "848954", "base_macs": "125485696",
        "params": "485413", "params_no_bn": "482000", "macs": "65168128",
        "params_reduction": "0.4309", "macs_reduction": "0.4807",
        "base_acc": "93.00", "acc_compressed": "60.00", "acc_final": "93.50", "acc_best": "93.60",
        "epochs_baseline": "2", "epochs_finetune": "1", "train_time_s": "12.5",
        "device": "cpu: test", "git_sha": "a" * 40, "command": "python run.py", "run_dir": "outputs/run",
        "experiment": "energy_aware_cifar10", "recipe": "smoke", "data": "cifar10[4660/932]",
        "timestamp": "2025-01-01T00:00:00Z", "extra": "{}",
    }
    row.update({key: str(value) for key, value in fields.items()})
    return row


def write_csv(path: Path, rows: list[dict[str, str]], fields: tuple[str, ...] = RESULT_FIELDS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def paper_row(key: str, metric: str, value: str, qualifier: str = "", unit: str = "%") -> dict[str, str]:
    return {
        "key": key, "paper": "toy", "table": "Table 1", "method": "nuclear", "model": "resnet56", "dataset": "cifar10",
        "metric": metric, "value": value, "unit": unit, "qualifier": qualifier, "convention": "top-1",
        "source": "arXiv:0000.00000, Table 1", "notes": "",
    }


@pytest.fixture
def paper(tmp_path: Path):
    rows = [
        paper_row("toy:r56", "acc", "94.00"),
        paper_row("toy:r56", "macs_reduction", "47.4"),
        paper_row("toy:r56", "macs", "65.94", unit="M"),
        paper_row("toy:r56b", "acc", "93.00"),
        paper_row("toy:bound", "params_reduction", "98.9", qualifier="up to"),
        paper_row("toy:dense", "acc", "93.26"),
    ]
    return load_paper_numbers(write_csv(tmp_path / "paper.csv", rows, PAPER_FIELDS))


def spec(**fields: object) -> TableSpec:
    return TableSpec(**{"name": "toy", "title": "Toy table", "params": "params", **fields})


def runs_of(tmp_path: Path, rows: list[dict[str, str]]):
    return load_results([write_csv(tmp_path / "runs.csv", rows)])


def test_mean_std_and_count_per_group(tmp_path: Path, paper) -> None:
    rows = [run(seed=s, acc_final=a) for s, a in ((0, 93.0), (1, 93.5), (2, 94.0))] + [run(method="l1", acc_final=92.0)]
    summary = summarize(runs_of(tmp_path, rows), spec(), paper).set_index("method")
    assert summary.loc["nuclear", "seeds"] == 3
    assert summary.loc["nuclear", "acc"] == pytest.approx(93.5)
    assert summary.loc["nuclear", "acc_std"] == pytest.approx(0.5)
    assert summary.loc["nuclear", "delta"] == pytest.approx(0.5)
    assert summary.loc["nuclear", "macs_red"] == pytest.approx(100 * (1 - 65168128 / 125485696))
    assert summary.loc["l1", "seeds"] == 1 and math.isnan(summary.loc["l1", "acc_std"])


def test_single_seed_shows_a_dash_and_repeated_seeds_are_counted(tmp_path: Path, paper) -> None:
    rows = [run(), run(seed=1, run_dir="a"), run(seed=1, run_dir="b", acc_final=94.5)]
    cells = display_frame(summarize(runs_of(tmp_path, rows[:1]), spec(), paper), spec())
    assert cells.loc[0, "acc %"] == "93.50 ± —" and cells.loc[0, "seeds"] == "1"
    cells = display_frame(summarize(runs_of(tmp_path, rows), spec(), paper), spec())
    assert cells.loc[0, "seeds"] == "2 (3 runs)"


def test_recipes_data_and_devices_are_never_merged(tmp_path: Path, paper) -> None:
    rows = [run(), run(recipe="hrankplus_finetune"), run(data="cifar10[50000/10000]"), run(device="cuda: H100"),
            run(epochs_finetune=150), run(seed=1, git_sha="b" * 40)]
    summary = summarize(runs_of(tmp_path, rows), spec(), paper)
    assert len(summary) == 5
    assert set(summary["recipe"]) == {"smoke (2+1 ep)", "smoke (2+150 ep)", "hrankplus_finetune (2+1 ep)"}
    merged = summary[(summary["recipe"] == "smoke (2+1 ep)") & (summary["device"] == "cpu: test")
                     & (summary["data"] == "cifar10[4660/932]")]
    assert merged["git"].tolist() == ["aaaaaaa,bbbbbbb"]
    assert "several commits" in render_markdown(summary, spec(), paper)
    split = summarize(runs_of(tmp_path, rows), spec(group_by=("git_sha",)), paper)
    assert len(split) == 6


def test_paper_join_gap_missing_and_reference_rows(tmp_path: Path, paper) -> None:
    match = {"method": ("nuclear",), "model": ("resnet56",), "target": (R56,)}
    table = spec(rows=(
        RowSpec(match, ("toy:r56", "toy:r56b")),
        RowSpec({"method": ("nuclear",), "target": ("ratio=0.9",)}, ("toy:r56",)),
        RowSpec({}, ("toy:dense",)),
    ))
    summary = summarize(runs_of(tmp_path, [run(acc_final=93.5), run(seed=1, acc_final=94.5)]), table, paper)
    assert summary["kind"].tolist() == ["run", "run", "missing", "reference"]
    assert summary["paper"].tolist() == ["toy:r56", "toy:r56b", "toy:r56", "toy:dense"]
    first = summary.iloc[0]
    assert first["paper_acc"] == 94.0 and first["gap_acc"] == pytest.approx(0.0)
    assert first["paper_macs"] == pytest.approx(65.94e6) and first["paper_macs_text"] == "65.94M"
    assert first["gap_macs_red"] == pytest.approx(first["macs_red"] - 47.4)
    assert summary.iloc[1]["gap_acc"] == pytest.approx(1.0)
    missing = summary.iloc[2]
    assert (missing["target"], missing["model"], missing["dataset"]) == ("ratio=0.9", "resnet56", "cifar10")
    assert math.isnan(missing["acc"]) and missing["paper_acc"] == 94.0
    cells = display_frame(summary, table)
    assert cells["seeds"].tolist() == ["2", "2", "0", ""]
    assert cells["gap acc pp"].tolist() == ["+0.00", "+1.00", "", ""]


def test_a_bound_is_shown_but_gives_no_gap(tmp_path: Path, paper) -> None:
    table = spec(rows=(RowSpec({"method": ("nuclear",)}, ("toy:bound",)),))
    summary = summarize(runs_of(tmp_path, [run()]), table, paper)
    assert summary.loc[0, "paper_params_red_text"] == "≤98.9"
    assert math.isnan(summary.loc[0, "paper_params_red"]) and math.isnan(summary.loc[0, "gap_params_red"])


def test_params_column_and_extra_keys(tmp_path: Path, paper) -> None:
    rows = [run(method="lrpet", extra=f'{{"energy_transfer": {e}, "bn_rectify": true}}', acc_final=90 + i)
            for i, e in enumerate(("true", "false"))]
    table = spec(params="params_no_bn", group_by=("extra.energy_transfer",), where={"extra.bn_rectify": ("true",)})
    summary = summarize(runs_of(tmp_path, rows), table, paper)
    assert summary["extra.energy_transfer"].tolist() == ["false", "true"]
    assert summary["params_red"].iloc[0] == pytest.approx(100 * (1 - 482000 / 848954))
    header = next(line for line in render_markdown(summary, table, paper).splitlines() if line.startswith("| method"))
    assert "| target " in header and "| energy_transfer " in header


def test_empty_results_give_an_empty_table_with_a_note(paper) -> None:
    summary = summarize(load_results([]), spec(), paper)
    assert summary.empty
    text = render_markdown(summary, spec(), paper)
    assert "| method" in text and "No recorded run matches this table yet." in text
    assert "\\begin{tabular}" in render_latex(summary, spec())


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda rows, fields: (rows, fields[:-1]), "runs.csv:1: column 'extra': missing from the header"),
        (lambda rows, fields: ([rows[0], {**rows[1], "acc_final": "n/a"}], fields),
         "runs.csv:3: column 'acc_final': expected a number, got 'n/a'"),
        (lambda rows, fields: ([rows[0], {**rows[1], "seed": "1.5"}], fields),
         "runs.csv:3: column 'seed': expected an integer, got '1.5'"),
        (lambda rows, fields: ([{**rows[0], "method": "magic"}, rows[1]], fields),
         "runs.csv:2: column 'method': unknown method 'magic'"),
        (lambda rows, fields: ([rows[0], {**rows[1], "extra": "[1]"}], fields), "runs.csv:3: column 'extra'"),
    ],
)
def test_bad_csv_fails_with_one_line_and_writes_nothing(tmp_path: Path, capsys, edit, expected) -> None:
    rows, fields = edit([run(), run(seed=1)], RESULT_FIELDS)
    write_csv(tmp_path / "results" / "runs.csv", rows, fields)
    (tmp_path / "out").mkdir()
    code = main(["--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                 "--paper-numbers", str(PAPER_CSV), "--tables", str(TABLES)])
    error = capsys.readouterr().err
    assert code == 2 and expected in error and error.count("\n") == 1
    assert not any((tmp_path / "out").iterdir())


def test_bad_table_config_names_the_file(tmp_path: Path, paper) -> None:
    (tmp_path / "t.yaml").write_text("title: T\nparams: params\nrows:\n  - paper: nowhere:key\n")
    with pytest.raises(UserError, match=r"t\.yaml: rows\[0\]\.paper: unknown paper key 'nowhere:key'"):
        load_table_specs(tmp_path, set(paper["key"]))
    (tmp_path / "t.yaml").write_text("title: T\nparams: params\nsort: yes\n")
    with pytest.raises(UserError, match=r"t\.yaml: unknown key 'sort'"):
        load_table_specs(tmp_path, set(paper["key"]))


def synthetic_results(results: Path) -> None:
    """Runs for the energy-aware tables: three seeds per method and rate, two rates."""
    rows = []
    for i, (method, shift) in enumerate((("nuclear", 0.3), ("l1", 0.0), ("hrank", 0.1), ("random", -0.6))):
        for seed in range(3):
            for target, macs, params in ((R56, 65168128, 485413), ("[0.]+[0.18]*29", 90000000, 660000)):
                loss = 2.0 if macs < 80e6 else 1.0
                rows.append(run(method=method, seed=seed, target=target, macs=macs, params=params,
                                acc_final=93.2 + shift - loss + 0.1 * seed, acc_compressed=40 + 10 * i + seed,
                                experiment="energy_aware_criteria" if target == R56 else "energy_aware_cifar10"))
    write_csv(results / "runs.csv", rows)


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    synthetic_results(tmp_path / "results")
    args = ["--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
            "--paper-numbers", str(PAPER_CSV)]
    assert main([*args, "--tables", str(TABLES)]) == 0
    again = build_report(find_result_csvs(tmp_path / "results"), PAPER_CSV, TABLES)
    for name, content in again.items():
        assert (tmp_path / "out" / name).read_bytes() == content, name
    plots = sorted(p.name for p in (tmp_path / "out" / "plots").glob("*.png"))
    assert "energy_aware_cifar10-resnet56-cifar10-macs.png" in plots
    assert any("criteria" in name for name in plots)
    assert all((tmp_path / "out" / "plots" / p).read_bytes().startswith(b"\x89PNG") for p in plots)


def tracked_result_csvs(root: Path, find: Callable[[Path], list[Path]] = find_result_csvs) -> list[Path]:
    """The results CSVs (or with `find`, the latency CSVs) under `root`/results that git tracks: a user's own runs
    (the quickstart's results/runs.csv) are untracked and never enter a test."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "results"], cwd=root, capture_output=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"{root} is not a git checkout: the committed results cannot be told from a user's runs")
    tracked = {root / name for name in listed.decode().split("\0") if name}
    return [path for path in find(root / "results") if path in tracked]


def test_only_the_tracked_results_csvs_are_read(tmp_path: Path) -> None:
    for name in ("results/runs/table.csv", "results/runs.csv", "results/paper_numbers.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("method\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "results/runs/table.csv", "results/paper_numbers.csv"], cwd=tmp_path, check=True)
    assert tracked_result_csvs(tmp_path) == [tmp_path / "results/runs/table.csv"]


def test_committed_tables_are_current() -> None:
    committed = ROOT / "results" / "tables"
    if not any(committed.glob("*.md")):
        pytest.skip("no committed tables yet: run `python -m prunelab.report` and commit results/tables")
    outputs = build_report(tracked_result_csvs(ROOT), PAPER_CSV, TABLES, plots=False,
                           claims_dir=ROOT / "conf" / "claims", readme=ROOT / "README.md",
                           latency_csvs=tracked_result_csvs(ROOT, find_latency_csvs))
    assert "../README.md" in outputs  # the README's verdict table is checked with the tables
    stale = [name for name, content in outputs.items()
             if not (ROOT / "results" / name).is_file() or (ROOT / "results" / name).read_bytes() != content]
    assert not stale, f"stale tables {stale}: run `python -m prunelab.report` and commit results/tables"
    orphans = {f"tables/{p.name}" for p in committed.iterdir() if p.suffix in (".md", ".tex")} - set(outputs)
    assert not orphans, f"tables without a config in conf/tables: {sorted(orphans)}"


def test_every_paper_number_has_a_source_and_every_config_loads() -> None:
    paper = load_paper_numbers(PAPER_CSV)
    assert len(paper) > 0 and (paper["source"].str.strip() != "").all()
    specs = load_table_specs(TABLES, set(paper["key"]))
    names = {s.name for s in specs}
    assert {"energy_aware_cifar10", "energy_aware_criteria", "lrpet_cifar10", "lrpet_ablation"} <= names


def test_notebook_runs_headless(tmp_path: Path, monkeypatch) -> None:
    synthetic_results(tmp_path / "results")
    monkeypatch.setenv("PRUNELAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(ROOT / "notebooks" / "results.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs)


def test_the_rate_plot_draws_a_line_per_setting_and_the_papers_values(tmp_path: Path, paper) -> None:
    from prunelab.report.plots import table_figures, target_rate

    assert target_rate("rate=0.7; G=2; minT=8") == (0.7, "G=2; minT=8") and math.isnan(target_rate("ratio=0.5")[0])
    rows = [run(method="cst", target=f"rate={r}; G={g}", seed=s, acc_final=90 - 10 * r + g + s)
            for r in (0.5, 0.7) for g in (2, 4) for s in (0, 1)]
    table = spec(plots=("rate",), rows=(RowSpec({"method": ("cst",), "target": ("rate=0.5; G=2",)}, ("toy:r56",)),
                                        RowSpec({"method": ("cst",), "target": ("rate=0.9; G=2",)}, ("toy:r56b",))))
    figures = dict(table_figures(summarize(runs_of(tmp_path, rows), table, paper), table, paper))
    (stem,) = figures
    ax = figures[stem].axes[0]
    assert stem == "toy-resnet56-cifar10-rate" and len(ax.containers) == 2  # ours: G=2 and G=4, error bars
    (dashed,) = [line for line in ax.get_lines() if line.get_label().startswith("paper: toy")]
    assert list(dashed.get_xdata()) == [50.0, 90.0] and list(dashed.get_ydata()) == [94.0, 93.0]  # run and not run


def test_the_default_view_is_compact_with_measured_speedup_and_setup_footnotes(tmp_path: Path, paper) -> None:
    latency = '{"latency": {"batch_1": {"ms": 2.0, "dense_ms": 3.0, "speedup": 1.5}, "batch_64": {"ms": 10.0, "dense_ms": 25.0, "speedup": 2.5}}}'
    rows = [run(extra=latency), run(seed=1, extra=latency), run(method="l1", recipe="other")]
    table = spec(rows=(RowSpec({"method": ("nuclear",)}, ("toy:r56",)),))
    summary = summarize(runs_of(tmp_path, rows), table, paper)
    compact = render_markdown(summary, table, paper)
    wide = render_markdown(summary, table, paper, wide=True)
    header = next(line for line in compact.splitlines() if line.startswith("| method"))
    assert "measured ×" in header and "recipe" not in header and "model" not in header  # one model: not shown
    nuclear = next(line for line in compact.splitlines() if line.startswith("| nuclear"))
    assert "2.50" in nuclear and "93.50 ± 0.00 (2)" in nuclear and "[1]" in nuclear
    assert "[2] recipe other" in compact and "toy-wide.md" in compact
    assert "| recipe" in next(line for line in wide.splitlines() if line.startswith("| method"))


def test_a_learning_rate_chosen_on_validation_and_the_paired_gain(tmp_path: Path, paper) -> None:
    """select: per line, only the lr whose seed-0 run scores best on the validation split (never the test
    accuracy); gain_ci pairs the composed method's runs with the inner method's by seed."""
    from prunelab.report.selection import Selection

    def lop_run(method: str, target: str, seed: int, lr: float, val: float, acc: float) -> dict[str, str]:
        return run(method=method, target=target, seed=seed, acc_final=acc,
                   extra=f'{{"lr": {lr}, "acc_val": {val}}}')

    rows = [
        lop_run("l1", "ratio=0.5", 0, 0.01, 60.0, 99.0),  # best on test, not on validation
        lop_run("l1", "ratio=0.5", 0, 0.1, 61.0, 50.0),
        lop_run("l1", "ratio=0.5", 1, 0.1, 0.0, 52.0),  # other seeds run at the chosen lr only
        lop_run("l1", "ratio=0.5", 2, 0.1, 0.0, 54.0),
        lop_run("lop(l1)", "E=2; gamma=3000; ratio=0.5", 0, 0.01, 62.0, 51.0),
        lop_run("lop(l1)", "E=2; gamma=3000; ratio=0.5", 0, 0.1, 62.0, 10.0),  # a tie: the smaller lr is kept
        lop_run("lop(l1)", "E=2; gamma=3000; ratio=0.5", 1, 0.01, 0.0, 55.0),
        lop_run("lop(l1)", "E=2; gamma=3000; ratio=0.5", 2, 0.01, 0.0, 53.0),
    ]
    table = spec(group_by=("extra.lr",), select=Selection("extra.lr", "extra.acc_val", 0))
    summary = summarize(runs_of(tmp_path, rows), table, paper).set_index("method")
    assert summary.loc["l1", "extra.lr"] == "0.1" and summary.loc["l1", "acc"] == pytest.approx(52.0)
    assert summary.loc["l1", "val"] == pytest.approx(61.0 / 3)  # the validation accuracy, mean over the seeds
    assert summary.loc["lop(l1)", "extra.lr"] == "0.01" and summary.loc["lop(l1)", "seeds"] == 3
    assert summary.loc["lop(l1)", "gain"] == pytest.approx(1.0)
    half = T975_2 * 1.0 / 3 ** 0.5  # differences 1, 3, -1: mean 1, std 2
    assert summary.loc["lop(l1)", "gain_ci"] == f"+1.00 [{1 - 2 * half:+.2f}, {1 + 2 * half:+.2f}]"
    assert summary.loc["l1", "gain_ci"] == ""


T975_2 = 4.302652729  # Student t, 97.5 % quantile, 2 degrees of freedom


def test_runs_stopped_by_a_rule_group_across_their_epoch_counts(tmp_path: Path, paper) -> None:
    rows = [run(seed=s, epochs_finetune=e) for s, e in ((0, 11), (1, 13), (2, 12))]
    assert len(summarize(runs_of(tmp_path, rows), spec(), paper)) == 3  # by default epochs split the rows
    (line,) = summarize(runs_of(tmp_path, rows), spec(recipe_epochs=False), paper).itertuples()
    assert line.seeds == 3 and line.recipe == "smoke (2+11-13 ep)"  # shown as the epochs the runs took
    (line,) = summarize(runs_of(tmp_path, rows[:1]), spec(recipe_epochs=False), paper).itertuples()
    assert line.recipe == "smoke (2+11 ep)"


def test_the_pareto_plots_draw_one_line_per_method_through_its_budgets(tmp_path: Path, paper) -> None:
    from prunelab.report.plots import png_bytes, table_figures

    rows = []
    for method, (red30, red50) in {"l1": (0.70, 0.50), "cst": (0.71, 0.52)}.items():
        for budget, red, acc in (("macs<=0.3", red30, 60.0), ("macs<=0.5", red50, 66.0)):
            rows += [run(method=method, seed=s, macs_reduction=red, macs=round(125485696 * (1 - red)), acc_final=acc + s,
                     experiment="compare",
                         extra=f'{{"budget_asked": "{budget}", "latency": {{"batch_64": {{"speedup": {1 / (1 - red)}}}}}}}')
                     for s in (0, 1)]
    table = spec(group_by=("extra.budget_asked",), plots=("pareto_macs", "pareto_latency"))
    figures = dict(table_figures(summarize(runs_of(tmp_path, rows), table, paper), table, paper))
    assert sorted(figures) == ["toy-resnet56-cifar10-pareto_latency", "toy-resnet56-cifar10-pareto_macs"]
    (ax,) = figures["toy-resnet56-cifar10-pareto_macs"].axes
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # one error-bar line per method
    assert sorted(lines) == ["cst", "l1"]
    assert list(lines["l1"].get_xdata()) == pytest.approx([30.0, 50.0]) and list(lines["l1"].get_ydata()) == [60.5, 66.5]
    assert "dense model" in [line.get_label() for line in ax.get_lines()]
    assert all(png_bytes(f).startswith(b"\x89PNG") for f in figures.values())
    untimed = [r | {"extra": r["extra"].split(', "latency"')[0] + "}"} for r in rows]
    assert list(dict(table_figures(summarize(runs_of(tmp_path, untimed), table, paper), table, paper))) == [
        "toy-resnet56-cifar10-pareto_macs"]  # nothing timed: no latency plot


def test_the_wandb_report_holds_every_table_with_the_rows_of_its_markdown(tmp_path: Path) -> None:
    import json

    synthetic_results(tmp_path / "results")
    args = ["--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "out"), "--tables", str(TABLES),
            "--paper-numbers", str(PAPER_CSV), "--wandb", "--wandb-dir", str(tmp_path / "wb")]
    assert main(args) == 0
    logged = {str(path): json.loads(path.read_text()) for path in (tmp_path / "wb").rglob("*.table.json")}
    criteria = [t for name, t in logged.items() if "energy_aware_criteria" in name]
    assert criteria, sorted(logged)
    markdown = (tmp_path / "out" / "tables" / "energy_aware_criteria-wide.md").read_text()
    body = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    header, rows = body[0], body[1:]
    (table,) = criteria
    assert [c.strip() for c in header.strip("| ").split(" | ")] == table["columns"]
    assert len(rows) == len(table["data"]) and all(any(cell.strip() == str(v) for cell in rows[i].split("|"))
                                                     for i, line in enumerate(table["data"]) for v in line[:1])
    from prunelab.report.wandb_report import group_of

    groups = {group_of(s) for s in load_table_specs(TABLES, set(load_paper_numbers(PAPER_CSV)["key"]))}
    assert len(list((tmp_path / "wb" / "wandb").glob("offline-run-*"))) == len(groups)  # one W&B run per group
