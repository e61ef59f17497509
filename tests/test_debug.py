"""debug=fast: every method and every experiment end to end, bounded by counting (never by timing) the optimizer
steps, scoring batches and evaluation batches of the whole run; smoke rows never reach a table."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch.optim.optimizer import register_optimizer_step_post_hook

from prunelab import pipeline
from prunelab.methods import rounds
from prunelab.methods.channel import ChannelPruning
from prunelab.record import read_results
from prunelab.report import load_results
from prunelab.smoke import capped
from prunelab.train import loop

from conftest import REPO, compose_config
from test_report import run as result_row, write_csv

METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))

# Synthetic data large enough that every cap of conf/debug/fast.yaml binds: 128 training images are 16 steps of
# 8 per epoch (cap 2), 64 test images 4 evaluation batches of 16 (cap 2), 48 validation images 3 (cap 2).
DATA = ["dataset=synthetic", "dataset.num_train=176", "dataset.num_test=64", "dataset.val_images=48",
        "dataset.download=false", "device=cpu", "debug=fast"]
TINY_MODEL = ["dataset.image_size=8", "dataset.pad=1", "model=resnet20", "model.widths=[8,16,32]"]  # CST: 8 templates

# The largest run is method=double: a dense baseline of 2 epochs, then two rounds stages (gates, basis) of
# 1 reference epoch + 2 rounds of 1 epoch, at 2 steps each: 4 + 6 + 6 = 16 steps; 2 stages x 2 rounds x 2
# Taylor batches = 8 scoring batches (a channel criterion: 16 images in batches of 8, 2); evaluations of 2 test
# + 2 validation batches after each of its 8 epochs, 5 per rounds stage (trained and pruned, rounds 0-2) and 3
# in the pipeline (compressed, final, validation), at most 4 batches each: (8 + 10) x 4 + 6 = 78.
MAX_STEPS, MAX_SCORING_BATCHES, MAX_EVAL_BATCHES = 16, 8, 78


@pytest.fixture
def counts(monkeypatch) -> Iterator[Counter]:
    """Optimizer steps, scoring batches and evaluation batches (model forwards while evaluating) of the runs in
    the test, counted where they happen."""
    seen: Counter = Counter()
    handle = register_optimizer_step_post_hook(lambda *_: seen.update(["steps"]))
    top1, taylor, scoring = loop.top1, rounds.taylor_scores, ChannelPruning.scoring_batches

    def counted_top1(model, *args, **kwargs):
        hook = model.register_forward_pre_hook(lambda *_: seen.update(["eval"]))
        try:
            return top1(model, *args, **kwargs)
        finally:
            hook.remove()

    def counted_taylor(model, units, batches):
        seen["scoring"] += len(batches)
        return taylor(model, units, batches)

    def counted_scoring(self, ctx):
        batches = scoring(self, ctx)
        seen["scoring"] += len(batches)
        return batches

    monkeypatch.setattr(loop, "top1", counted_top1)
    monkeypatch.setattr(rounds, "taylor_scores", counted_taylor)
    monkeypatch.setattr(ChannelPruning, "scoring_batches", counted_scoring)
    try:
        yield seen
    finally:
        handle.remove()


def where(tmp_path: Path) -> list[str]:
    return [f"results.csv={tmp_path}/runs.csv", f"paths.baselines={tmp_path}/baselines",
            f"paths.checkpoints={tmp_path}/checkpoints"]


def check_smoke_run(record: dict, tmp_path: Path, counts: Counter) -> None:
    """A whole smoke run: recorded as one, within the counted bounds."""
    assert record["extra"]["smoke"] is True and "latency" in record["extra"]
    assert [r["run_dir"] for r in read_results(tmp_path / "runs.csv")] == [record["run_dir"]]
    assert (tmp_path / "run" / "model.pt").is_file()
    assert 0 < counts["steps"] <= MAX_STEPS, counts
    assert counts["scoring"] <= MAX_SCORING_BATCHES, counts
    assert 0 < counts["eval"] <= MAX_EVAL_BATCHES, counts


@pytest.mark.parametrize("name", METHODS)
def test_every_method_runs_end_to_end_on_a_few_counted_batches(tmp_path: Path, counts: Counter, name: str) -> None:
    cfg = compose_config([f"method={name}", *DATA, *TINY_MODEL, *where(tmp_path)])
    record = pipeline.run(cfg, tmp_path / "run")
    check_smoke_run(record, tmp_path, counts)
    if name in ("basis", "double", "taylor_gates"):  # both rounds ran: the exported network is pruned
        assert record["params"] < record["base_params"] and len(record["extra"]["rounds"]) == 5
    if name == "cst":  # the ramp of two steps reached the rate
        assert record["extra"]["pruned_fraction"] > 0.4
    if name == "lrpet":  # one projection after each of the two epochs
        assert record["extra"]["projections"] == 2


def first_sweep_point(name: str) -> list[str]:
    """The overrides of the first point of an experiment's sweep (its dataset choice aside: data here is synthetic)."""
    params = OmegaConf.select(OmegaConf.load(REPO / "conf" / "experiment" / f"{name}.yaml"), "hydra.sweeper.params")
    return [f"{key}={str(value).split(',')[0]}" for key, value in (params or {}).items()
            if key != "dataset" and not key.startswith("dataset.")]


def smaller_model(cfg) -> None:
    """The experiment's model at a fraction of its width (the same depth, layout and layer names), so that all of
    them run within CI's time; a hub ResNet-50 becomes a ResNet-18 unless per-layer rates name its layout."""
    if cfg.model.arch == "cifar_resnet":
        cfg.model.widths = [8, 16, 32]
    elif cfg.model.arch == "cifar_vgg":
        cfg.model.cfg = [c if c == "M" else max(8, c // 8) for c in cfg.model.cfg]
        cfg.model.classifier_hidden = [h // 8 for h in cfg.model.classifier_hidden]
    elif cfg.model.arch == "hub":  # offline: random weights, and the 32-pixel images as they are
        cfg.model.pretrained, cfg.model.resolution = False, None
        methods = [m for m in (cfg.method, cfg.method.get("pruner")) if m is not None]
        if cfg.model.name == "resnet50" and not any(m.get("compress_rate") for m in methods):
            cfg.model.name = "resnet18"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_its_first_point_on_a_few_counted_batches(tmp_path: Path, counts: Counter,
                                                                         name: str) -> None:
    cfg = compose_config([f"experiment={name}", *first_sweep_point(name), *DATA, "dataset.image_size=32",
                          *where(tmp_path)])
    smaller_model(cfg)
    if cfg.baseline.get("source") is not None:  # a transfer source: synthetic data too
        source = OmegaConf.load(REPO / "conf" / "dataset" / "synthetic.yaml")
        cfg.baseline.source = OmegaConf.merge(source, {"num_train": 256, "num_test": 128, "seed": 1})
    record = pipeline.run(cfg, tmp_path / "run")
    assert record["experiment"] == name
    check_smoke_run(record, tmp_path, counts)


def test_the_caps_lower_counts_keep_zeros_and_follow_nested_methods() -> None:
    cfg = compose_config(["method=double", "method@method.pruner=taylor_gates", "trainer=smoke", "debug=fast",
                          "trainer.epochs=7", "method.scoring.batches=1"])
    run, changes = capped(cfg)
    assert (run.trainer.epochs, run.trainer.limit_steps, run.trainer.limit_eval_batches) == (2, 2, 1)  # 1: kept
    assert run.baseline.trainer.epochs == 2  # `baseline.trainer: ${trainer}` follows the capped recipe
    assert (run.method.max_rounds, run.method.pruner.max_rounds, run.method.reference_epochs) == (2, 2, 1)
    assert run.method.scoring.batches == 1 and run.method.pruner.scoring.batches == 1  # below the cap: kept
    assert run.method.pruner_epochs == 0 and run.method.tolerance == run.method.pruner.tolerance == 100
    assert changes["trainer.epochs"] == (7, 2) and cfg.trainer.epochs == 7  # the composed config is left as it was
    lrpet = capped(compose_config(["method=lrpet", "debug=fast"]))[0].method
    assert lrpet.project_every == 0  # once per epoch stays once per epoch
    imagenet = capped(compose_config(["experiment=lrpet_imagenet", "debug=fast"]))[0]
    assert imagenet.method.project_every == 2 and imagenet.baseline.trainer.epochs == 2
    channel = capped(compose_config(["method=svd", "method@method.pruner=nuclear", "debug=fast"]))[0].method.pruner
    assert (channel.scoring.images, channel.scoring.batch_size) == (16, 8)
    plain = compose_config(["method=basis"])
    assert capped(plain) == (plain, {}) and plain.smoke is None


def test_debug_runs_write_outside_results() -> None:
    cfg = compose_config(["debug=fast"])
    assert not str(cfg.results.csv).startswith("results/") and "debug" in str(cfg.paths.baselines)
    assert cfg.measure.latency.min_run_time < 0.1 and list(cfg.measure.latency.batch) == [2]


def test_the_report_skips_smoke_rows_with_a_line(tmp_path: Path, caplog) -> None:
    smoke = result_row(extra=json.dumps({"smoke": True}), acc_final=99.0)
    path = write_csv(tmp_path / "runs.csv", [result_row(), smoke])
    with caplog.at_level(logging.WARNING, logger="prunelab.report.frame"):
        runs = load_results([path])
    assert len(runs) == 1 and 99.0 not in set(runs["acc_final"])
    assert f"{path}: skipped 1 smoke-run row(s)" in caplog.text and "line(s) 3" in caplog.text
