"""The verdict page (report/claims.py): claims read from YAML, arms paired by seed, each verdict, contrasts,
the learning rate chosen on validation, untestable claims, bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunelab.errors import UserError
from prunelab.report import load_results
from prunelab.report.claims import evaluate, load_claims, render_claims

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
