"""The claims study's driver (experiments/claims.py on experiments/driver.py): which runs an arm still needs, the
lr chosen on validation, resuming from recorded rows, arms that follow a chosen lr, and the arms' labels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from test_report import run, write_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import claims  # noqa: E402
import driver  # noqa: E402

TARGET = "[0.]+[0.15]*2+[0.4]*9"
VAL = {0.01: 60.0, 0.03: 64.0, 0.1: 62.0}  # validation accuracy by lr: 0.03 wins
TEST = {0.01: 70.0, 0.03: 50.0, 0.1: 71.0}  # test accuracy by lr: would pick another lr if it were read


def row(lr: float, seed: int) -> dict[str, str]:
    return run(method="nuclear", target=TARGET, model="resnet20", dataset="cifar10", seed=seed,
               experiment="claims_energy_aware", acc_final=TEST[lr], extra=json.dumps({"lr": lr, "acc_val": VAL[lr]}))


@pytest.fixture
def fake_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int]]:
    """Runs are recorded, not trained: each call appends the row it would have written; returns the calls."""
    monkeypatch.setattr(driver, "REPO", tmp_path)
    csv = tmp_path / driver.results_csv("claims_energy_aware")
    rows = [row(0.01, 0)]  # recorded before: a killed study's first run
    write_csv(csv, rows)
    calls: list[tuple[float, int]] = []

    def call(overrides: list[str], dry_run: bool, cpu: str | None = None) -> None:
        values = dict(o.split("=", 1) for o in overrides)
        calls.append((float(values["trainer.lr"]), int(values["seed"])))
        rows.append(row(*calls[-1]))
        write_csv(csv, rows)

    monkeypatch.setattr(driver, "call", call)
    return calls


def test_an_arm_runs_what_is_not_recorded_and_chooses_its_lr_on_validation(fake_runs) -> None:
    arm = driver.Arm("claims_energy_aware", ("method=nuclear",))
    driver.run_arms([arm])
    assert fake_runs == [(0.03, 0), (0.1, 0), (0.03, 1), (0.03, 2)]  # 0.01 at seed 0 was recorded: skipped
    assert driver.chosen_lr(arm) == 0.03
    driver.run_arms([arm])  # everything recorded: the study resumes to nothing
    assert len(fake_runs) == 4


def test_a_failing_arm_is_named_at_the_end_and_the_others_run_on(fake_runs, monkeypatch, capsys) -> None:
    good, bad = (driver.Arm("claims_energy_aware", ("method=nuclear",)),
                 driver.Arm("claims_energy_aware", ("method=l1",), grid=(0.1,)))
    recording = driver.call

    def call(overrides: list[str], dry_run: bool, cpu: str | None = None) -> None:
        if "method=l1" in overrides:
            raise RuntimeError("budget not met")
        recording(overrides, dry_run, cpu)

    monkeypatch.setattr(driver, "call", call)
    assert driver.run_arms([bad, good], jobs=2) == [bad]
    assert fake_runs == [(0.03, 0), (0.1, 0), (0.03, 1), (0.03, 2)]  # the good arm ran all its runs
    assert "arm claims_energy_aware method=l1 failed" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"1 arm\(s\) failed .*: claims_energy_aware method=l1"):
        driver.exit_if_failed([bad])
    driver.exit_if_failed([])  # nothing failed: no exit


def test_followers_wait_for_the_chosen_lr_then_run_at_it(fake_runs) -> None:
    leader = driver.Arm("claims_energy_aware", ("method=nuclear",))
    assert driver.chosen_lr(leader) is None and claims.followers(leader, [("method.ties=numpy",)]) == []
    driver.run_arms([leader])
    (follower,) = claims.followers(leader, [("method.ties=numpy",)])
    assert follower.grid == (0.03,) and follower.overrides == ("method.ties=numpy",)


def test_arms_of_one_experiment_have_distinct_labels() -> None:
    arms = [*claims.energy_aware(), *claims.basis(), *claims.lrpet(), *claims.cst()]
    arms += [driver.Arm("claims_lrpet", v) for v in claims.LRPET_ABLATIONS]
    arms += [driver.Arm("claims_cst", (*claims.CST_HIGH_RATE, *v)) for v in claims.CST_GROUPS]
    labels = [(a.experiment, tuple(a.label().values())) for a in arms]
    assert len(set(labels)) == len(labels)


def test_the_dry_run_prints_every_part_without_running(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["claims.py", "--dry-run", "--only", "energy_aware", "cst"])
    claims.main()
    out = capsys.readouterr().out
    assert "score stability" in out and "experiment=claims_cst method.rate=0.5 trainer.lr=0.05 seed=0" in out
    assert "claims_basis" not in out and "+ " + sys.executable + " -m prunelab.report" in out


def test_the_comparison_runs_every_contender_at_the_first_budget_then_the_rest(capsys, monkeypatch) -> None:
    import compare

    arms = compare.leaders()
    labels = [a.label() for a in arms]
    assert len(arms) == 10 and all(lab["extra.budget_asked"] == "macs<=0.5" and "target" not in lab for lab in labels)
    assert {a.grid for a in arms} == {driver.LR_GRID, claims.SCRATCH_GRID, compare.ADAM_GRID}  # each chooses
    monkeypatch.setattr(sys, "argv", ["compare.py", "--small", "--dry-run"])
    compare.main()
    out = capsys.readouterr().out
    assert "run.py experiment=compare contender=lop point=macs50 trainer.lr=0.03 seed=0" in out
    assert "then every contender at macs30, params50" in out


def test_the_comparison_refuses_a_timing_pass_in_one_line(capsys, monkeypatch) -> None:
    """A refused retime (e.g. another CPU thread count than the committed timings') ends the study with one line
    and status 2 after its runs, not a traceback."""
    import compare

    from prunelab.errors import UserError

    def refuse(*args: object) -> None:
        raise UserError("results/latency/compare.csv: its runs were timed with 2 CPU thread(s): set OMP_NUM_THREADS=2")

    monkeypatch.setattr(compare, "run_arms", lambda *args: [])
    monkeypatch.setattr(compare, "retime", refuse)
    monkeypatch.setattr(sys, "argv", ["compare.py", "--small"])
    with pytest.raises(SystemExit) as exit_:
        compare.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: results/latency/compare.csv: its runs were timed with 2 CPU thread(s): set OMP_NUM_THREADS=2"]
