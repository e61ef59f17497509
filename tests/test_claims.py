"""The verdict page (report/claims.py): claims read from YAML, arms paired by seed, each verdict, contrasts,
the learning rate chosen on validation, untestable claims, bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunelab.errors import UserError
from prunelab.report import load_results
from prunelab.report.claims import evaluate, load_claims, render_claims, render_summary
from prunelab.report.files import with_block

from test_report import run, write_csv

CLAIMS = """
paper: Toy paper
notes: ../docs/papers/toy.md
claims:
  - id: better
    claim: b beats a
    select: {among: extra.lr, by: extra.acc_val, seed: 0}
    a: {method: l1, target: r5}
    b: {method: "lop(l1)", target: r5}
  - id: within
    claim: b within one point of a
    a: {method: l1, target: r9}
    b: {method: "lop(l1)", target: r9}
    tolerance: 1
  - id: grows
    claim: the gain is larger at r9 than at r5
    select: {among: extra.lr, by: extra.acc_val, seed: 0}
    a: {method: l1, target: r9}
    b: {method: "lop(l1)", target: r9}
    versus: {a: {method: l1, target: r5}, b: {method: "lop(l1)", target: r5}}
  - id: lonely
    claim: too few seeds
    a: {method: l1, target: r1}
    b: {method: "lop(l1)", target: r1}
  - id: far
    claim: needs ImageNet
    untestable: no ImageNet here
"""


def rows() -> list[dict[str, str]]:
    out = []
    for seed, (ft5, lop5, ft9, lop9) in enumerate([(60, 62, 40, 40.5), (61, 62.5, 41, 40.8), (59, 61.4, 40, 40.1)]):
        out += [run(method="l1", target="r5", seed=seed, acc_final=ft5, extra='{"lr": 0.1, "acc_val": 70}'),
                run(method="lop(l1)", target="r5", seed=seed, acc_final=lop5, extra='{"lr": 0.1, "acc_val": 70}'),
                run(method="l1", target="r9", seed=seed, acc_final=ft9), run(method="lop(l1)", target="r9", seed=seed,
                                                                               acc_final=lop9)]
    # a grid point that loses on validation (and would win on test): dropped by the selection
    out.append(run(method="lop(l1)", target="r5", seed=0, acc_final=99.0, extra='{"lr": 0.01, "acc_val": 10}'))
    out += [run(method="l1", target="r1", seed=0, acc_final=1.0), run(method="lop(l1)", target="r1", seed=0, acc_final=2.0)]
    return out


@pytest.fixture
def setup(tmp_path: Path):
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "toy.yaml").write_text(CLAIMS)
    runs = load_results([write_csv(tmp_path / "runs.csv", rows())])
    return load_claims(tmp_path / "claims"), runs


def test_each_verdict_from_paired_runs(setup) -> None:
    (paper,), runs = setup
    results = {c.id: evaluate(runs, c) for c in paper.claims}
    better = results["better"]
    assert better.arms["b"] == {0: 62.0, 1: 62.5, 2: 61.4} and better.result.differences == pytest.approx((2, 1.5, 2.4))
    assert better.verdict == "reproduced"
    assert results["within"].verdict == "reproduced"  # +0.13 on average, the interval above -1
    grows = results["grows"]  # per seed (lop9 - ft9) - (lop5 - ft5) = -1.5, -1.7, -2.3
    assert grows.result.differences == pytest.approx((-1.5, -1.7, -2.3)) and grows.verdict == "not reproduced"
    assert results["lonely"].verdict == "too few runs" and results["far"].verdict == "not tested"


def test_an_arm_with_two_runs_of_one_seed_is_refused(setup) -> None:
    (paper,), runs = setup
    claim = next(c for c in paper.claims if c.id == "better")
    with pytest.raises(UserError, match="claim better: arm b matches 2 runs of seed 0"):
        evaluate(runs, type(claim)(**{**claim.__dict__, "select": None}))


def test_the_page_lists_every_claim_with_its_numbers(setup) -> None:
    papers, runs = setup
    page = render_claims(papers, runs)
    assert page.count("\n| ") == 1 + 5  # the header, one row per claim
    assert "| b beats a |  | 60.00 ± 1.00 (3) | 61.97 ± 0.55 (3) | b − a > 0 | +1.97 [" in page
    assert "**not tested**" in page and "no ImageNet here" in page and "[notes](../docs/papers/toy.md)" in page


@pytest.mark.parametrize(("text", "message"), [
    ("paper: x\nclaims: [{id: a, claim: c, a: {method: l1}}]", r"claims\[0\].b: expected a mapping"),
    ("paper: x\nclaims: [{id: a, claim: c, a: {m: 1}, b: {m: 2}, direction: 2}]", "direction must be 1 or -1"),
    ("paper: x\nclaims: [{id: a, claim: c, a: {m: 1}, b: {m: 2}, colour: red}]", r"unknown key\(s\) \['colour'\]"),
    ("paper: x\nclaims: [{id: a, claim: c, untestable: why}, {id: a, claim: d, untestable: why}]", "ids must be unique"),
])
def test_bad_claim_configs_name_the_entry(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        load_claims(tmp_path)


def test_the_committed_claims_load() -> None:
    papers = load_claims(Path(__file__).resolve().parents[1] / "conf" / "claims")
    assert papers and all(p.claims for p in papers)


def test_arms_read_their_own_metric_and_threshold_claims_read_a_csv(tmp_path: Path) -> None:
    runs = load_results([write_csv(tmp_path / "runs.csv", [
        run(method="basis", seed=s, acc_final=acc, base_acc=ref, params_reduction=red)
        for s, (acc, ref, red) in enumerate([(55.0, 55.5, 0.60), (54.0, 54.4, 0.62), (56.0, 56.6, 0.61)])])])
    curves = tmp_path / "curves.csv"  # relative to the repository root in a config; absolute here
    curves.write_text("criterion,seed,spearman\nnuclear,0,0.95\nnuclear,1,0.97\nnuclear,2,0.96\nl1,0,0.1\n")
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "toy.yaml").write_text(f"""
paper: Toy
claims:
  - id: within
    claim: the pruned network is within one point of its reference
    a: {{method: basis, metric: base_acc}}
    b: {{method: basis}}
    tolerance: 1
  - id: reduction
    claim: more than half of the parameters go
    metric: params_reduction
    b: {{method: basis}}
    threshold: 0.5
  - id: stable
    claim: scores from few images rank like scores from many
    b: {{csv: {curves}, metric: spearman, criterion: nuclear}}
    threshold: 0.9
""")
    (paper,) = load_claims(tmp_path / "claims")
    results = {c.id: evaluate(runs, c) for c in paper.claims}
    assert results["within"].result.differences == pytest.approx((-0.5, -0.4, -0.6))
    assert results["within"].verdict == "reproduced"  # mean -0.5, interval [-0.75, -0.25]: above -1
    assert results["reduction"].arms["a"] == {0: 0.5, 1: 0.5, 2: 0.5}
    assert results["reduction"].result.mean == pytest.approx(0.11) and results["reduction"].verdict == "reproduced"
    assert results["stable"].arms["b"] == {0: 0.95, 1: 0.97, 2: 0.96} and results["stable"].verdict == "reproduced"
    page = render_claims([paper], runs)
    assert "| b − a > -1 (a: base_acc; b: acc_final) |" in page and "| 0.5 (threshold) |" in page
    assert "b − a > 0 (spearman)" in page


@pytest.mark.parametrize(("claim", "message"), [
    ("a: {method: x}\n    b: {method: y}\n    threshold: 1", "a threshold claim has only an arm b"),
    ("b: {csv: no/such.csv, metric: v}\n    threshold: 1", "csv no/such.csv does not exist"),
    ("a: {method: l1}\n    b: {method: l1, colour: red}", r"no column\(s\) \['colour'\]"),
])
def test_bad_arms_are_refused_in_one_line(tmp_path: Path, claim: str, message: str) -> None:
    runs = load_results([write_csv(tmp_path / "runs.csv", [run(method="l1", seed=0)])])
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "toy.yaml").write_text(f"paper: Toy\nclaims:\n  - id: c\n    claim: c\n    {claim}\n")
    with pytest.raises(UserError, match=message):
        evaluate(runs, load_claims(tmp_path / "claims")[0].claims[0])


def test_the_readme_summary_has_one_line_per_claim_between_the_markers(setup) -> None:
    papers, runs = setup
    summary = render_summary(papers, runs)
    assert summary.count("\n| ") == 5  # one line per claim below the header
    assert "| Toy paper | b beats a | +1.97 [" in summary and "| Toy paper | needs ImageNet | no ImageNet here |" in summary
    readme = "# x\n<!-- verdicts:start -->\nold\n<!-- verdicts:end -->\nafter\n"
    updated = with_block(readme, summary, "verdicts")
    assert "old" not in updated and updated.endswith("<!-- verdicts:end -->\nafter\n")
    assert with_block(updated, summary, "verdicts") == updated  # idempotent
    with pytest.raises(UserError, match="expected the markers"):
        with_block("# no markers\n", summary, "verdicts")
