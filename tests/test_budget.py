"""Budgets instead of knobs (prunelab/budget.py): the bisection on exact step functions, every method with a knob
on ResNet-20 (profile, random weights), monotone costs, refusals, and a run that records what it met."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunelab import budget
from prunelab.config import compose_config
from prunelab.errors import UserError

REPO = Path(__file__).resolve().parents[1]
METHODS = {  # overrides -> the knob the budget sets
    "l1": (["method=l1"], "method.ratio"),
    "nuclear": (["method=nuclear"], "method.ratio"),
    "lrpet": (["method=lrpet"], "method.rank_ratio"),
    "svd": (["method=svd", "method.pruner.ratio=0"], "method.rank_ratio"),
    "lop": (["method=lop", "method.expand=0"], "method.pruner.ratio"),
}


def steps(cfg, cost: str) -> float:
    """A cost that falls by 0.1 at every tenth of the knob, as integer channel counts make it fall."""
    return 1 - math.floor(float(cfg.method.ratio) * 10) / 10


def config(*overrides: str):
    return compose_config(["model=resnet20", "method=l1", *overrides])


def test_the_bisection_finds_the_least_compression_that_fits() -> None:
    solution = budget.solve(config("budget.macs=0.55", "budget.tolerance=0.1"), steps)
    assert solution.achieved == 0.5 and 0.5 <= solution.value <= 0.5 + budget.STEP  # the step just past 0.5
    assert solution.knob == "method.ratio" and solution.budget == 0.55 and solution.cost == "macs"
    assert budget.solve(config("budget.params=1"), steps).value == 0.0  # the dense model fits: nothing removed


@pytest.mark.parametrize(("overrides", "message"), [
    (["budget.macs=0.55"], r"closest l1 gets from below is 0.5000 .* more than budget.tolerance=0.02"),
    (["budget.macs=0.01"], r"budget.macs=0.01 is below l1's floor: at method.ratio=0.99, .* keeps 0.1000"),
    (["budget.macs=0.5", "budget.params=0.5"], "one budget at a time"),
    (["budget.macs=0.5", "method.compress_rate='[0.]+[0.4]*11'"], "give method.compress_rate=null"),
    (["budget.macs=0.5", "method=basis"], "method=basis has no knob that fixes its cost before training"),
])
def test_budgets_that_cannot_be_met_are_refused_in_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        budget.solve(config(*overrides), steps)


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("cost", ["macs", "params"])  # latency: on a fake timer below
def test_every_knob_meets_a_budget_from_below_within_the_tolerance(name: str, cost: str) -> None:
    overrides, knob = METHODS[name]
    cfg = compose_config(["model=resnet20", *overrides, f"budget.{cost}=0.6", "budget.tolerance=0.05"])
    solved, met = budget.apply(cfg)
    assert met["knob"] == knob and met["cost"] == cost
    assert 0.6 - 0.05 <= met["achieved"] <= 0.6
    assert budget.profile_fraction(solved, cost) == pytest.approx(met["achieved"])  # what the config now reaches


@pytest.mark.parametrize("name", ["l1", "lrpet", "svd"])
def test_the_profiled_cost_is_non_increasing_in_the_knob(name: str) -> None:
    overrides, knob = METHODS[name]
    values = [0.1, 0.3, 0.5, 0.7, 0.9]
    fractions = [budget.profile_fraction(compose_config(["model=resnet20", *overrides, f"{knob}={v}"]), "macs")
                 for v in values]
    assert fractions == sorted(fractions, reverse=True) and fractions[0] > fractions[-1]


def test_a_run_records_the_budget_it_met_and_a_refused_one_writes_nothing(tmp_path: Path) -> None:
    common = ["model=resnet20", "model.widths=[8,16,32]", "dataset=synthetic", "dataset.num_train=32",
              "dataset.num_test=16", "dataset.image_size=8", "trainer=smoke", "device=cpu", "measure.latency=false",
              f"results.csv={tmp_path}/runs.csv", f"paths.baselines={tmp_path}/b", f"paths.checkpoints={tmp_path}/c",
              f"hydra.run.dir={tmp_path}/run", "method=l1"]
    ok = subprocess.run([sys.executable, "run.py", *common, "budget.params=0.6", "budget.tolerance=0.05"], cwd=REPO,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    met = record["extra"]["budget"]
    assert met["knob"] == "method.ratio" and record["target"] == f"ratio={met['value']:g}"
    assert 1 - record["params_reduction"] == pytest.approx(met["achieved"], abs=1e-6) and met["achieved"] <= 0.6
    bad = subprocess.run([sys.executable, "run.py", *common, "budget.macs=0.01", f"hydra.run.dir={tmp_path}/bad"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "below l1's floor" in bad.stderr.strip().splitlines()[-1]
    assert (tmp_path / "runs.csv").read_text().count("\n") == 2  # the header and the one run


def test_the_global_order_ranks_filters_by_score_over_their_layer_mean() -> None:
    from prunelab.methods.allocation import fit_budget, global_order, kept_after, removable

    scores = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([10.0, 30.0])}  # means 2 and 20
    assert global_order(scores) == [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1)]  # 0.5, 0.5, 1, 1.5, 1.5
    channels = {"a": 3, "b": 2}
    assert kept_after(global_order(scores), channels, 3) == {"a": [2], "b": [1]}  # a's second is skipped: min 1
    assert removable(channels) == 3
    kept_share = lambda kept: sum(map(len, kept.values())) / 5  # noqa: E731
    assert fit_budget(global_order(scores), channels, kept_share, 0.6) == (2, 0.6)
    assert fit_budget(global_order(scores), channels, kept_share, 0.3) == (4, 0.4)  # below the floor: refused


def test_global_allocation_meets_a_budget_with_one_filter_left_per_layer_at_least(tmp_path: Path) -> None:
    common = ["model=resnet20", "model.widths=[8,16,32]", "dataset=synthetic", "dataset.num_train=32",
              "dataset.num_test=16", "dataset.image_size=8", "trainer=smoke", "device=cpu", "measure.latency=false",
              f"results.csv={tmp_path}/runs.csv", f"paths.baselines={tmp_path}/b", f"paths.checkpoints={tmp_path}/c",
              "method=l1", "method.allocation=global"]
    ok = subprocess.run([sys.executable, "run.py", *common, "budget.macs=0.4", f"hydra.run.dir={tmp_path}/run"],
                        cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    met, widths = record["extra"]["budget"], record["extra"]["kept_widths"]
    assert record["target"] == "macs<=0.4; global" and met["knob"] == "removed filters (global)"
    assert 1 - record["macs_reduction"] == pytest.approx(met["achieved"]) and 0.4 - 0.02 <= met["achieved"] <= 0.4
    assert len(widths) == 9 and min(widths.values()) >= 1 and len(set(widths.values())) > 1  # not uniform
    bad = subprocess.run([sys.executable, "run.py", *common, "budget.macs=0.01", f"hydra.run.dir={tmp_path}/bad"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "below the floor of l1 with allocation=global" in bad.stderr.strip().splitlines()[-1]
    mixed = subprocess.run([sys.executable, "run.py", *common, "method.round_to=4", f"hydra.run.dir={tmp_path}/m"],
                           cwd=REPO, capture_output=True, text=True)
    assert mixed.returncode == 2 and "method.round_to=1" in mixed.stderr.strip().splitlines()[-1]


def test_a_latency_budget_is_searched_on_timings_here_a_fake_timer_that_counts_macs(monkeypatch) -> None:
    from prunelab.measure import count, latency

    def fake_median_s(model, x, autocast: bool, min_run_time: float) -> float:
        return count(model, tuple(x.shape[1:])).macs * 1e-9  # "time" proportional to the deploy form's MACs

    monkeypatch.setattr(latency, "_median_s", fake_median_s)
    common = ["model=resnet20", "method=svd", "method.pruner.ratio=0", "budget.tolerance=0.05", "measure.latency=false"]
    by_time = budget.solve(compose_config([*common, "budget.latency=0.6"]))
    by_macs = budget.solve(compose_config([*common, "budget.macs=0.6"]))
    assert by_time.cost == "latency" and by_time.knob == "method.rank_ratio"
    assert by_time.value == by_macs.value and by_time.achieved == pytest.approx(by_macs.achieved)


@pytest.mark.parametrize("method", ["basis", "taylor_gates"])
def test_pruning_rounds_stop_where_the_exported_cost_fits_the_budget(tiny_cfg, tmp_path: Path, method: str) -> None:
    from prunelab import pipeline

    rounds = [f"method={method}", "dataset.val_images=16", "method.reference_epochs=1", "method.max_rounds=8",
              "method.fraction=0.3", "method.scoring.batches=2", "budget.tolerance=0.05"]
    record = pipeline.run(tiny_cfg(*rounds, "budget.params=0.6"), tmp_path / "run")
    met, history = record["extra"]["budget"], record["extra"]["rounds"]
    assert met["knob"] == "pruning rounds" and 0.55 <= met["achieved"] <= 0.6
    assert 1 - record["params_reduction"] == pytest.approx(met["achieved"])  # the exported model is what was met
    trained = [h for h in history if h["event"] == "trained"]
    assert len(trained) < 8 + 1 and not any(h.get("restored") for h in history)  # stopped by the budget
    with pytest.raises(UserError, match="below the floor of the pruning rounds"):
        pipeline.run(tiny_cfg(*rounds, "budget.params=0.001", "seed=1"), tmp_path / "floor")


def test_double_pruning_splits_the_budget_between_its_gates_and_its_bases(tiny_cfg, tmp_path: Path) -> None:
    from prunelab import pipeline

    record = pipeline.run(tiny_cfg("method=double", "dataset.val_images=16", "method.reference_epochs=1",
                                   "method.max_rounds=8", "method.fraction=0.3", "method.scoring.batches=2",
                                   "budget.params=0.6", "budget.tolerance=0.1", "method.budget_share=0.5"),
                          tmp_path / "run")
    overall, gates = record["extra"]["budget"], record["extra"]["pruner"]["budget"]
    assert gates["budget"] == pytest.approx(0.8) and gates["achieved"] <= 0.8  # 1 - 0.5 (1 - 0.6) of the dense cost
    assert overall["budget"] == 0.6 and 0.5 <= overall["achieved"] <= 0.6
    assert 1 - record["params_reduction"] == pytest.approx(overall["achieved"])
    with pytest.raises(UserError, match="method.pruner.allocation=global"):
        pipeline.run(tiny_cfg("method=double", "method.pruner=l1", "dataset.val_images=16", "budget.params=0.6"),
                     tmp_path / "l1")


def test_a_trained_model_above_its_budget_is_refused_without_a_row() -> None:
    met = {"cost": "params", "budget": 0.5, "knob": "method.rate", "value": 0.52, "achieved": 0.4988}
    with pytest.raises(UserError, match=r"budget.params=0.5 was not met: the trained model keeps 0.5574"):
        budget.check_met(met, 5574, 10000)
    budget.check_met(met, 4900, 10000)
    assert met["achieved"] == 0.49  # the record keeps what the trained model reached


@pytest.mark.parametrize("contender", ["random", "l1", "nuclear", "taylor", "svd", "lop", "lrpet", "cst", "basis",
                                       "double"])
def test_every_contender_of_the_comparison_meets_its_budget_in_a_tiny_run(tiny_cfg, tmp_path: Path,
                                                                         contender: str) -> None:
    from prunelab import pipeline

    cfg = tiny_cfg("experiment=compare", f"contender={contender}", "point=params50", "debug=fast", "device=cpu",
                   "dataset=synthetic", "dataset.image_size=32", "dataset.val_images=32", "model.widths=[16,32,64]",
                   tiny=False)
    record = pipeline.run(cfg, tmp_path / "run")
    assert record["experiment"] == "compare" and record["extra"]["budget_asked"] == "params<=0.5"
    assert 1 - record["params_reduction"] <= 0.5 + 1e-9 and record["extra"]["budget"]["achieved"] <= 0.5


def test_the_cst_ramp_aims_at_the_cost_and_ends_within_the_budget(tiny_cfg, tmp_path: Path) -> None:
    from prunelab import pipeline

    cst = ["method=cst", "method.ramp_epochs=1", "method.min_templates=1", "model.widths=[8,16,32]",
           "budget.tolerance=0.1"]
    record = pipeline.run(tiny_cfg(*cst, "budget.macs=0.6"), tmp_path / "run")
    met = record["extra"]["budget"]
    assert met["knob"] == "templates (global ramp to the cost)" and record["target"].startswith("macs<=0.6; G=2")
    assert 0.5 <= 1 - record["macs_reduction"] == pytest.approx(met["achieved"]) and met["achieved"] <= 0.6
    with pytest.raises(UserError, match="below cst's floor"):
        pipeline.run(tiny_cfg(*cst, "budget.macs=0.01", "seed=1"), tmp_path / "floor")


@pytest.mark.parametrize("overrides", [["method=lrpet"], ["method=l1", "method.allocation=global"]])
def test_the_profile_prints_the_structure_that_meets_the_budget(overrides: list[str], capsys) -> None:
    """`python -m prunelab.profile ... budget.macs=F` prices what a run would build: a solved knob (lrpet) or a
    global allocation met in prepare (l1), both within the budget and its tolerance, with `budget` in the line."""
    from prunelab.profile import main

    assert main(["model=resnet20", *overrides, "budget.macs=0.3", "budget.tolerance=0.03"]) == 0
    out = json.loads(capsys.readouterr().out)
    kept = out["macs"] / out["base_macs"]
    assert 0.27 <= kept <= 0.3 and out["budget"]["cost"] == "macs" and out["budget"]["achieved"] == pytest.approx(kept)
