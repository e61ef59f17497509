"""One place for the rules of every config key (prunelab/validate.py): every key of every config file has a rule,
every config file keeps its rules, a bad value of any key is refused in one line naming the key, before anything
runs, and with exit status 2 from the command line."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from conftest import REPO, TINY
from prunelab import pipeline
from prunelab.config import CONF, compose_config, method_kinds
from prunelab.errors import UserError
from prunelab.rules import AnyOf, Flag, Free, ListOf, Off, OneOf, Range, Rates, Regex, Rule, Text
from prunelab.validate import INNER_KINDS, rules_of, validate

GROUPS = {"method": "method", "trainer": "trainer", "dataset": "dataset", "model": "model", "logger": "logger",
          "experiment": "experiment", "setting": "setting"}


def every_config() -> dict[str, list[str]]:
    """{label: overrides} of every file of every run-config group, the transfer source slot, and every composite
    with each inner method it is defined for."""
    configs = {f"{group}={p.stem}": [f"{override}={p.stem}"] for group, override in GROUPS.items()
               for p in sorted((CONF / group).glob("*.yaml"))}
    configs["dataset@baseline.source=cifar10_0to4"] = ["dataset@baseline.source=cifar10_0to4"]
    for outer, kinds in INNER_KINDS.items():
        for name, kind in method_kinds().items():
            if kind in kinds:
                configs[f"method={outer} method.pruner={name}"] = [f"method={outer}", f"method.pruner={name}"]
    return configs


@pytest.fixture(scope="module")
def composed() -> dict[str, DictConfig]:
    return {label: compose_config(overrides) for label, overrides in every_config().items()}


def test_every_key_of_every_config_file_has_a_rule(composed: dict[str, DictConfig]) -> None:
    missing = sorted({f"{path} (in {label})" for label, cfg in composed.items()
                      for path, _, rule in rules_of(cfg) if rule is None})
    assert not missing, "add a rule to prunelab/validate.py for: " + ", ".join(missing)


def test_every_config_file_keeps_the_rules(composed: dict[str, DictConfig]) -> None:
    for label, cfg in composed.items():
        try:
            validate(cfg)
        except UserError as err:
            pytest.fail(f"{label}: {err}")


def bad_values(rule: Rule) -> list[object]:
    """Values `rule` must refuse."""
    bad: list[object] = [] if rule.null or isinstance(rule, Free) else [None]
    if isinstance(rule, Range):
        bad += ["abc", True, math.inf]
        if rule.lo is not None:
            bad.append(rule.lo if rule.lo_open else rule.lo - 1)
        if rule.hi is not None:
            bad.append(rule.hi if rule.hi_open else rule.hi + 1)
        if rule.integer:
            bad.append((rule.lo if rule.lo is not None else 0) + 1.5)
    elif isinstance(rule, Flag):
        bad += ["maybe", 1]
    elif isinstance(rule, OneOf):
        bad += ["nosuch"]
    elif isinstance(rule, Text):
        bad += [[1]]
    elif isinstance(rule, ListOf):
        size = rule.length or max(rule.min_len, 1)
        bad += ["abc"] + [[item] * size for item in bad_values(rule.item) if item is not None]
        bad += [[]] * bool(rule.min_len) + [[1] * (size + 1)] * (rule.length is not None)
    elif isinstance(rule, AnyOf):
        bad += ["abc", -1]
    elif isinstance(rule, Regex):
        bad += ["[", 3]
    elif isinstance(rule, Rates):
        bad += ["[1.0]", [1.5], "0.5", 3]
    elif isinstance(rule, Off):
        bad += [True, 3]
    return bad


def keys_with_rules(composed: dict[str, DictConfig]) -> list[tuple[str, str, Rule]]:
    """(config label, key, rule) of every key once (its first config), the composite keys once per composite."""
    seen, out = set(), []
    for label, cfg in composed.items():
        kind = str(cfg.method.kind)
        for path, _, rule in rules_of(cfg):
            scope = kind if path.startswith("method.") else ""
            if rule is not None and (scope, path) not in seen:
                seen.add((scope, path))
                out.append((label, path, rule))
    return out


def test_a_bad_value_of_any_key_is_refused_in_one_line_naming_it(composed: dict[str, DictConfig]) -> None:
    checked = 0
    for label, path, rule in keys_with_rules(composed):
        for bad in bad_values(rule):
            cfg = composed[label].copy()
            OmegaConf.update(cfg, path, bad, merge=False)
            with pytest.raises(UserError) as err:
                validate(cfg)
            message = str(err.value)
            assert "\n" not in message and path in message, f"{label}, {path}={bad!r}: {message}"
            checked += 1
    assert checked > 500


@pytest.fixture(scope="module")
def run_py():
    spec = importlib.util.spec_from_file_location("run_script", REPO / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("args", "message"), [
    (["seed=99999999999999999999"], "seed=99999999999999999999 must be in [0, 4294967295]"),
    (["seed=1.5"], "seed=1.5 is not an integer"),
    (["trainer.epochs=1.5"], "trainer.epochs=1.5 is not an integer"),
    (["trainer.limit_steps=0"], "trainer.limit_steps=0 must be >= 1"),
    (["trainer.limit_eval_batches=0"], "trainer.limit_eval_batches=0 must be >= 1"),
    (["trainer.momentum=-1"], "trainer.momentum=-1 must be in [0, 1)"),
    (["trainer.weight_decay=-1"], "trainer.weight_decay=-1 must be >= 0"),
    (["trainer.nesterov=true", "trainer.momentum=0"], "trainer.nesterov=true needs trainer.optimizer=sgd and "
                                                      "trainer.momentum > 0"),
    (["baseline.trainer.amp=fp16"], "unknown baseline.trainer.amp 'fp16': choose one of bf16, none"),
    (["method=svd", "method.pruner=lrpet"], "method.pruner=lrpet: method=svd is defined for inner methods of "
                                            "kind channel only"),
    (["method=double", "method.pruner=lrpet"], "method.pruner=lrpet: method=double is defined for inner methods of "
                                               "kind channel or taylor_gates only"),
    (["method=svd", "method.pruner=cst"], "method.pruner=cst: method=svd"),
    (["method=lop", "method.pruner=cst"], "method.pruner=cst: method=lop"),
    (["method=lop", "method.pruner=lrpet"], "method.pruner=lrpet: method=lop"),
    (["method=svd", "method.pruner=basis"], "method.pruner=basis: method=svd is defined for inner methods of kind "
                                            "channel only: choose method.pruner=hrank, l1, nuclear, random or taylor"),
    (["measure.latency.batch=abc"], "measure.latency.batch=abc is not a list"),
    (["measure.latency.batch=[0]"], "measure.latency.batch[0]=0 must be >= 1"),
    (["measure.latency.min_run_time=-1"], "measure.latency.min_run_time=-1 must be > 0"),
    (["measure.latency=true"], "measure.latency=true is not false"),
    (["experiment=energy_aware_cifar10", "rate_set=nosuch"], "unknown rate_set 'nosuch'"),
    (["model=resnet20", "model.depth=21"], "model.depth=21: a CIFAR ResNet has depth 6n+2"),
])
def test_bad_input_exits_2_with_one_line_before_hydra_starts(run_py, capsys, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as done:
        run_py.check_command_line(args)
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_hydra_folders_and_launcher_are_checked(run_py, capsys, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "afile").write_text("x")
    for args, message in ((["hydra.run.dir=afile"], "is a file, not a folder"),
                          (["hydra.run.dir=afile/sub"], "is a file, not a folder"),
                          (["-m", "hydra.sweep.dir=afile", "seed=0,1"], "hydra.sweep.dir=afile"),
                          (["-m", "hydra/launcher=slurm", "seed=0,1"], "this machine has no srun")):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr("shutil.which", lambda name: None)
        with pytest.raises(SystemExit) as done:
            run_py.check_command_line(args)
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.count("\n") == 1 and message in err, err
    run_py.check_command_line(["hydra.run.dir=new/folder", *TINY])  # a folder still to create is fine
    assert not (tmp_path / "new").exists()


def test_keys_are_checked_before_anything_runs(tiny_cfg, tmp_path: Path, monkeypatch) -> None:
    def nothing_may_run(*args, **kwargs):
        raise AssertionError("the config was not checked first")

    monkeypatch.setattr(pipeline, "build_dataset", nothing_may_run)
    monkeypatch.setattr(pipeline, "init_world", nothing_may_run)
    for bad in (["trainer.amp=fp16"], ["method=lop", "method.pruner=cst"], ["measure.latency={batch:[0]}"]):
        with pytest.raises(UserError):
            pipeline.run(tiny_cfg(*bad), tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs.csv").exists()


def test_a_baseline_checkpoint_with_impossible_numbers_is_refused(tiny_cfg, tmp_path: Path) -> None:
    from prunelab.models import build_model
    from prunelab.train import checkpoint as ckpt

    cfg = tiny_cfg("method=l1")
    for acc, epochs, message in ((math.nan, 3, "records acc=nan"), (90.0, -3, "records epochs=-3")):
        path = tmp_path / "dense.pt"
        ckpt.save_model(path, build_model(cfg.model, 10), acc=acc, epochs=epochs)
        with pytest.raises(UserError, match=f"baseline.checkpoint: .*dense.pt {message}"):
            pipeline.run(tiny_cfg("method=l1", f"baseline.checkpoint={path}"), tmp_path / "run")
    assert not (tmp_path / "runs.csv").exists()


def test_export_options_are_checked_before_the_export(tmp_path: Path) -> None:
    from prunelab.export import check_options

    model = tmp_path / "run" / "model.pt"
    model.parent.mkdir()
    check_options(model, tmp_path / "run" / "model.onnx", 1, 20, 1e-4)
    for out, batch, repeats, message in ((model, 1, 20, "is a file of the run itself"),
                                         (model.with_name("metrics.json"), 1, 20, "is a file of the run itself"),
                                         (tmp_path / "nowhere" / "m.onnx", 1, 20, "does not exist"),
                                         (model.with_name("m.onnx"), 0, 20, "--batch 0"),
                                         (model.with_name("m.onnx"), 1, 0, "--repeats 0")):
        with pytest.raises(UserError, match=message):
            check_options(model, out, batch, repeats, 1e-4)


def test_a_corrupt_metrics_json_is_one_line(tmp_path: Path) -> None:
    from prunelab.evaluate import recorded_accuracy

    assert recorded_accuracy(tmp_path / "metrics.json", "test") is None
    for text in ("{not json", "[1, 2]", '{"extra": {}}'):
        (tmp_path / "metrics.json").write_text(text)
        with pytest.raises(UserError, match="metrics.json is not a run record .*move it aside"):
            recorded_accuracy(tmp_path / "metrics.json", "test")


FAULT = '''
import prunelab.pipeline

def run(cfg, run_dir, command=""):
    raise RuntimeError(f"a fault in job seed={cfg.seed}")

prunelab.pipeline.run = run
'''


def test_a_sweep_job_that_fails_with_a_fault_is_listed_and_the_sweep_exits_2(tmp_path: Path) -> None:
    (tmp_path / "shim").mkdir()
    (tmp_path / "shim" / "sitecustomize.py").write_text(FAULT)  # every job of the sweep fails with a fault
    done = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "-m", *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep",
         f"results.csv={tmp_path}/runs.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), str(REPO / "src")])})
    assert done.returncode == 2, done.stderr
    assert "2 job(s) of the sweep failed" in done.stderr and "RuntimeError: a fault in job seed=1" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Traceback" in (tmp_path / "sweep" / "0-l1-resnet20" / "traceback.txt").read_text()
