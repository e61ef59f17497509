"""Standings at matched budgets (report/standings.py) on hand-made rows: the reference is chosen on validation,
every other method is placed by its paired interval against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report import run, write_csv

from prunelab.errors import UserError
from prunelab.report import load_results, load_table_specs
from prunelab.report.selection import Selection
from prunelab.report.spec import TableSpec
from prunelab.report.standings import render_brief, render_standings, standings, standings_frame

T975_2 = 4.302652729  # Student t, 97.5 % quantile, 2 degrees of freedom
SPEC = TableSpec(name="toy", title="Toy", params="params", where={"experiment": ("compare",)},
                 group_by=("extra.budget_asked", "extra.lr"), select=Selection("extra.lr", "extra.acc_val", 0),
                 standings="extra.budget_asked")


def entrant(method: str, accs: list[float], val: float, budget: str = "macs<=0.5", lr: float = 0.01) -> list[dict]:
    extra = {"budget_asked": budget, "lr": lr, "acc_val": val}
    return [run(method=method, seed=seed, acc_final=acc, experiment="compare", extra=json.dumps(extra))
            for seed, acc in enumerate(accs)]


def rows() -> list[dict]:
    return [
        *entrant("l1", [60, 62, 64], val=70),                    # best on validation: the reference
        *entrant("l1", [99], val=50, lr=0.1),                    # l1's other lr, not chosen on validation
        *entrant("random", [61, 63, 65], val=60),                # +1 at every seed: above
        *entrant("nuclear", [50, 52, 54], val=65),               # -10 at every seed: below
        *entrant("taylor", [61, 61, 64], val=66),                # +1, -1, 0: level
        *entrant("cst", [70], val=80),                           # one seed: neither reference nor placed
        *entrant("l1", [55], val=60, budget="macs<=0.3"),        # a budget without two seeds anywhere
    ]


def test_the_reference_is_chosen_on_validation_and_every_other_method_is_placed_by_its_interval(
        tmp_path: Path) -> None:
    table = standings(load_results([write_csv(tmp_path / "runs.csv", rows())]), SPEC)
    assert list(table) == ["macs<=0.3", "macs<=0.5"]
    placed = {e.name: e for e in table["macs<=0.5"]}
    assert [e.name for e in table["macs<=0.5"]] == ["l1", "cst", "random", "taylor", "nuclear"]  # then by test acc
    assert placed["l1"].standing == "reference" and placed["l1"].accs == {0: 60.0, 1: 62.0, 2: 64.0}
    assert placed["random"].standing == "above" and placed["random"].result.low == pytest.approx(1.0)
    assert placed["nuclear"].standing == "below" and placed["nuclear"].result.high == pytest.approx(-10.0)
    half = T975_2 * 1.0 / 3 ** 0.5  # differences +1, -1, 0: mean 0, sample std 1
    taylor = placed["taylor"].result
    assert placed["taylor"].standing == "level" and (taylor.low, taylor.high) == pytest.approx((-half, half))
    assert placed["cst"].standing == "too few runs" and placed["cst"].result is None
    assert [e.standing for e in table["macs<=0.3"]] == ["too few runs"]


def test_the_page_and_the_readme_lines_show_the_same_standings(tmp_path: Path) -> None:
    table = standings(load_results([write_csv(tmp_path / "runs.csv", rows())]), SPEC)
    page = render_standings(table, SPEC)
    assert "| l1 | 70.00 | 62.00 ± 2.00 (3) |" in page and "| **reference** |" in page
    assert "| nuclear | 65.00 | 52.00 ± 2.00 (3) |" in page and "-10.00 [-10.00, -10.00] | **below** |" in page
    brief = render_brief(table, SPEC)
    assert brief.startswith("- `macs<=0.3`: no reference; too few runs: l1\n")
    assert "- `macs<=0.5`: reference **l1** 62.00 ± 2.00 (3); level: taylor; below: nuclear; above: random; " \
           "too few runs: cst\n" in brief
    assert "results/tables/toy-standings.md" in brief
    frame = standings_frame(table, "extra.budget_asked")  # what W&B receives: the page's cells, budget first
    body = [line for line in page.splitlines() if line.startswith("| ") and "---" not in line and "val acc" not in line]
    assert len(frame) == len(body) == 6 and list(frame.columns[:2]) == ["extra.budget_asked", "method"]
    assert [f"| {' | '.join(cells[1:-1])} | **{cells[-1]}** |" for cells in frame.values.tolist()] == body


def test_equal_validation_means_go_to_the_first_method_in_alphabetical_order(tmp_path: Path) -> None:
    def tied(method: str, vals: list[float]) -> list[dict]:
        return [row | {"extra": json.dumps({"budget_asked": "macs<=0.5", "lr": 0.01, "acc_val": v})}
                for row, v in zip(entrant(method, [60, 61, 62], val=0), vals, strict=True)]

    rows = [*tied("random", [68.6, 68.4, 68.6]), *tied("l1", [68.4, 68.6, 68.6])]  # equal means, summed apart
    table = standings(load_results([write_csv(tmp_path / "runs.csv", rows)]), SPEC)
    assert [(e.name, e.standing) for e in table["macs<=0.5"]] == [("l1", "reference"), ("random", "level")]


def test_standings_must_name_a_group_by_key_other_than_the_selected_one(tmp_path: Path) -> None:
    head = "title: T\nparams: params\ngroup_by: [extra.budget_asked, extra.lr]\n" \
           "select: {among: extra.lr, by: extra.acc_val, seed: 0}\n"
    for key in ("extra.lr", "extra.other"):
        (tmp_path / "t.yaml").write_text(head + f"standings: {key}\n")
        with pytest.raises(UserError, match=rf"t\.yaml: standings: expected one of group_by .* got '{key}'"):
            load_table_specs(tmp_path, set())
    (tmp_path / "t.yaml").write_text(head + "standings: extra.budget_asked\n")
    assert load_table_specs(tmp_path, set())[0].standings == "extra.budget_asked"
