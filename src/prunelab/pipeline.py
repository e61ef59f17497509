"""One run, top to bottom (docs/design.md, "One path for every run").

    config -> data -> model -> dense baseline -> method.prepare -> stage 1 ... stage n -> method.finalize
           -> measure -> record

`run(cfg, run_dir, command)` is the only caller of each stage; `run.py` hands it the
composed Hydra config, whose every key it checks first (prunelab.validate).  A UserError anywhere
before `record` leaves no row behind.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prunelab import budget
from prunelab.config import dataset_config
from prunelab.data import build_dataset
from prunelab.errors import UserError
from prunelab.measure import Cost, count
from prunelab.measure.latency import configured_latency
from prunelab.methods.base import Context, Method, build_method
from prunelab.models import build_model, set_num_classes
from prunelab.record import (
    HistoryWriter, Mirror, append_row, check_appendable, device_name, git_sha, holds_run, open_mirror, utc_timestamp,
    write_json_atomic,
)
from prunelab.smoke import capped, is_smoke
from prunelab.storage import check_writable, failed_writes
from prunelab.train import checkpoint as ckpt
from prunelab.train.baseline import Baseline, dense_baseline, digest
from prunelab.train.distributed import World, init_world, pick_device
from prunelab.train.loop import FitResult, evaluate, fit
from prunelab.train.stage import Stage
from prunelab.validate import validate

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
HISTORY_COLUMNS = ("phase", "epoch", "lr", "train_loss", "train_acc", "test_acc", "val_acc", "epoch_time_s")
RESUME_AFTER_A_FAILED_WRITE = "; then run the same command with resume=true (it goes on from the last saved epoch)"
NOT_PART_OF_A_RUN = ("resume", "logger", "results", "device", "paths", "measure")  # keys that do not change the numbers
HYDRA_FILES = frozenset({".hydra", "run.log"})  # what Hydra writes into a run dir before the job starts


def run(cfg: DictConfig, run_dir: Path, command: str = "") -> dict[str, Any]:
    """Run the experiment `cfg` describes, write its record into `run_dir` and the results CSV.

    Recorded once: resuming a config whose run finished (`resume=true`, a SLURM requeue) returns its record,
    appending it only if the results CSV lacks it, and removes the run dir Hydra made for the resumed job when
    nothing else was written there; a run dir that holds a finished record is never reused.  The end of a run
    writes model.pt, then the config's `recorded.json` (naming metrics.json), then metrics.json, then the row:
    a job killed after metrics.json is finished, and its resume adds the row if it is missing (docs/design.md,
    "Result").
    The folders it writes to are checked first; a write that fails later (a full disk) is one line naming the
    file and the fix (`storage.py`).  A smoke run (`debug=fast`) runs with the caps of its `smoke` block
    (prunelab/smoke.py) and records `extra.smoke: true`.
    """
    validate(cfg)  # every key, before anything runs
    cfg, caps = capped(cfg)
    if caps:
        log.info("debug=fast: %s", ", ".join(f"{key} {old} -> {new}" for key, (old, new) in caps.items()))
    cfg, met = budget.apply(cfg)  # a budget becomes the method's knob before anything runs
    if met:
        log.info("budget.%s=%g: %s=%g keeps %.4f", met["cost"], met["budget"], met["knob"], met["value"],
                 met["achieved"])
    with failed_writes(_write_places(cfg, run_dir), then=RESUME_AFTER_A_FAILED_WRITE):
        return _run(cfg, run_dir, command, met)


def _run(cfg: DictConfig, run_dir: Path, command: str, met: dict[str, Any] | None = None) -> dict[str, Any]:
    """`run` without the translation of failed writes."""
    results_csv = Path(str(cfg.results.csv))
    done = _finished(cfg, results_csv)
    if done is not None:
        _remove_if_unused(run_dir)
        return done
    _check_unused(run_dir, results_csv)
    check_appendable(results_csv)
    _check_writable_folders(cfg, run_dir)
    world = init_world(str(cfg.device))
    device = pick_device(str(cfg.device), world)
    method = build_method(cfg.method)
    data = build_dataset(dataset_config(cfg, cfg.dataset), device)
    log.info("data %s on %s; method %s (%s); model %s", data.tag, device, method.label, method.target or "-",
             cfg.model.name)
    baseline = _baseline(cfg, method, data, device, world)
    if baseline is not None:
        log.info("dense baseline: %.2f%% after %d epochs (%s)", baseline.acc, baseline.epochs, baseline.source)
        if not baseline.epochs and not cfg.model.get("pretrained") and not cfg.baseline.checkpoint:
            log.warning("the dense model was neither trained (baseline.trainer=%s) nor pretrained: %s starts from "
                        "random weights", cfg.baseline.trainer.name, method.label)
    model = _starting_model(cfg, method, baseline, data, device)
    ctx = Context(data, device, int(cfg.seed), cfg.trainer, baseline.model if baseline else None,
                  str(cfg.model.name), run_dir)
    asked = budget.requested(cfg)
    if asked is not None:  # what the tables group by: "macs<=0.5"
        ctx.extra["budget_asked"] = f"{asked[0]}<={asked[1]:g}"
    if met:
        ctx.extra["budget"] = met
    ctx.budget = budget.target(cfg)
    model = method.prepare(model, ctx).to(device)
    stages = method.stages(ctx)
    _check_stage_names(stages)
    acc_compressed = None if method.trains_from_scratch else evaluate(model, data, cfg.trainer, device, world)
    if acc_compressed is not None:
        log.info("compressed: %.2f%% before %s", acc_compressed, recipe_label(stages))
    with _mirror(cfg, run_dir, world) as mirror:
        history = HistoryWriter(run_dir / "history.csv", HISTORY_COLUMNS) if world.is_main else None
        model, trained = _train(cfg, model, stages, data, device, world, history, mirror)
        model = method.finalize(model, ctx).to(device)
        acc_final = evaluate(model, data, cfg.trainer, device, world)
        if data.num_val:  # what a selection on the validation split reads: the score and the lr it was trained at
            ctx.extra.update(acc_val=evaluate(model, data, cfg.trainer, device, world, split="val"),
                             lr=float(cfg.trainer.lr))
        if not world.is_main:
            return {}
        if cfg.measure.latency:
            ctx.extra["latency"] = _latency(cfg, model, data, device)
        record = _record(cfg, method, ctx, data.tag, baseline, count(model, data.input_shape), acc_compressed,
                         acc_final, trained, stages, device, world, run_dir, command)
        ckpt.save_model(run_dir / "model.pt", model, config=OmegaConf.to_container(cfg, resolve=True))
        write_json_atomic(_marker(cfg), {"run_dir": record["run_dir"], "metrics": str(run_dir / "metrics.json"),
                                         "csv": str(results_csv), "timestamp": record["timestamp"]})
        write_json_atomic(run_dir / "metrics.json", record)
        _append(results_csv, record, run_dir)
        mirror.summary(record)
    log.info("%s: acc %.2f%% (%s %s), params %d -> %d (-%.1f%%), MACs %d -> %d (-%.1f%%); row added to %s",
             record["method"], acc_final, "reference" if "acc_reference" in ctx.extra else "dense",
             "-" if record["base_acc"] is None else f"{record['base_acc']:.2f}%",
             record["base_params"], record["params"], 100 * record["params_reduction"], record["base_macs"],
             record["macs"], 100 * record["macs_reduction"], cfg.results.csv)
    return record


def _write_places(cfg: DictConfig, run_dir: Path) -> dict[str, Path]:
    """The config key of each place a run writes to (for the line that reports a failed write)."""
    return {"hydra.run.dir": run_dir, "paths.checkpoints": Path(str(cfg.paths.checkpoints)),
            "paths.baselines": Path(str(cfg.paths.baselines)), "results.csv": Path(str(cfg.results.csv))}


def _check_writable_folders(cfg: DictConfig, run_dir: Path) -> None:
    """Before training: the run dir, the checkpoint folder and (when a dense baseline is trained or read from the
    cache) the baseline cache take new files."""
    places = _write_places(cfg, run_dir)
    uses_cache = not cfg.baseline.skip and not cfg.baseline.checkpoint
    for key in ("hydra.run.dir", "paths.checkpoints", *(("paths.baselines",) if uses_cache else ())):
        check_writable(places[key], key)


def _latency(cfg: DictConfig, model: nn.Module, data, device: torch.device) -> dict[str, Any]:
    """extra.latency: the final model against a dense model of the same architecture (measure/latency.py)."""
    dense = build_model(cfg.model, data.num_classes, pretrained=False).to(device)
    return configured_latency(cfg, model, dense, tuple(data.input_shape), device)


def _resuming(cfg: DictConfig) -> bool:
    return bool(cfg.resume) or int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0


def _marker(cfg: DictConfig) -> Path:
    """Where a finished run of this config notes its record (beside its epoch checkpoints)."""
    return Path(str(cfg.paths.checkpoints)) / run_key(cfg) / "recorded.json"


def _finished(cfg: DictConfig, results_csv: Path) -> dict[str, Any] | None:
    """When resuming a config whose run finished: its record, appended to `results_csv` if that lacks the row."""
    marker = _marker(cfg)
    if not (_resuming(cfg) and marker.is_file()):
        return None
    note = json.loads(marker.read_text())
    metrics = Path(note["metrics"])
    if not metrics.is_file():
        return None  # the finished run's folder is gone, or the job was killed before writing it: run again
    record = json.loads(metrics.read_text())
    if _append(results_csv, record, metrics.parent):
        log.info("resume: this config finished in %s; its record was added to %s", record["run_dir"], results_csv)
    else:
        log.info("resume: this config finished in %s and is recorded in %s; nothing to do", record["run_dir"],
                 results_csv)
    return record


def _check_unused(run_dir: Path, results_csv: Path) -> None:
    """A `UserError` when `run_dir` holds a finished run; it names the command that records it if the CSV lacks it."""
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        return
    fix = "start the run in a new directory (hydra.run.dir) or resume its config with resume=true"
    try:
        record = json.loads(metrics.read_text())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and not holds_run(results_csv, record):
        fix += f"; its row is not in {results_csv}: add it with python -m prunelab.record {metrics} --csv {results_csv}"
    raise UserError(f"{run_dir} already holds a finished run (metrics.json): {fix}")


def _remove_if_unused(run_dir: Path) -> None:
    """Delete `run_dir` when it holds only what Hydra wrote before the job started (nothing of a run)."""
    if (run_dir.is_dir() and run_dir.resolve() != Path.cwd().resolve()
            and {p.name for p in run_dir.iterdir()} <= HYDRA_FILES):
        shutil.rmtree(run_dir)


def _append(results_csv: Path, record: dict[str, Any], run_dir: Path) -> bool:
    """append_row (False when the CSV already holds the run), with the way to record without retraining when
    the file cannot be written."""
    try:
        return append_row(results_csv, record)
    except OSError as err:
        raise UserError(f"results.csv: cannot append to {results_csv} ({err}); the run's record is in "
                        f"{run_dir / 'metrics.json'}: add it with python -m prunelab.record {run_dir / 'metrics.json'} "
                        f"--csv {results_csv}") from None


def _train(cfg: DictConfig, model: nn.Module, stages: list[Stage], data, device: torch.device, world: World,
           history: HistoryWriter | None, mirror: Mirror) -> tuple[nn.Module, list[FitResult]]:
    """Run the stages in order, each with its own epoch checkpoint; history and W&B rows carry the stage name.

    W&B steps count epochs over all stages (the configured epochs of earlier stages plus this
    epoch), so they increase over the job and a resumed job logs at the same steps.
    """
    key = run_key(cfg)
    resume = _resuming(cfg)
    results, offset = [], 0
    for stage in stages:
        if stage.setup is not None:
            model = stage.setup(model).to(device)

        def log_epoch(row: dict[str, Any], offset: int = offset) -> None:
            history.append(row)
            mirror.log({f"{row['phase']}/{k}": v for k, v in row.items() if k != "phase"},
                       step=offset + int(row["epoch"]))

        results.append(fit(
            model, data, stage, device=device, seed=int(cfg.seed), world=world,
            checkpoint=Path(str(cfg.paths.checkpoints)) / key / f"{stage.name}.pt", resume=resume,
            fingerprint=key, on_epoch=log_epoch if world.is_main else None,
        ))
        offset += int(stage.recipe["epochs"])
    return model, results


def _check_stage_names(stages: list[Stage]) -> None:
    names = [s.name for s in stages]
    if len(set(names)) != len(names) or "baseline" in names:
        raise ValueError(f"stage names must be unique and not 'baseline' (they name checkpoints): {names}")


def recipe_label(stages: list[Stage], device: torch.device | None = None) -> str:
    """The recipe names of the stages, joined by '+' (one name for a one-stage method), with `@bf16` when a
    stage trained under bf16 autocast (`trainer.amp=bf16` on CUDA; the official codes train in float32)."""
    label = "+".join(dict.fromkeys(str(s.recipe["name"]) for s in stages)) or "none"
    bf16 = device is not None and device.type == "cuda" and any(s.recipe.get("amp") == "bf16" for s in stages)
    return label + ("@bf16" if bf16 else "")


def _mirror(cfg: DictConfig, run_dir: Path, world: World) -> Mirror:
    """The W&B mirror of this job (a no-op on ranks other than 0); finished when the run ends or fails."""
    if not world.is_main:
        return Mirror()
    return open_mirror(cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True), run_dir.name,
                       str(cfg.experiment_name) or None)


def run_key(cfg: DictConfig) -> str:
    """Hash of everything that determines a run's numbers: names its resumable checkpoint."""
    numbers = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NOT_PART_OF_A_RUN}
    return f"{cfg.method.name}-{cfg.model.name}-{digest(numbers)}"


def _baseline(cfg: DictConfig, method: Method, data, device: torch.device, world: World) -> Baseline | None:
    """The dense baseline: trained on the run's data, or on `baseline.source` for transfer learning."""
    if cfg.baseline.skip:
        if not method.trains_from_scratch:
            raise UserError(f"baseline.skip=true needs a method that trains from scratch; {cfg.method.name} "
                            "compresses the dense baseline: set baseline.skip=false")
        return None
    source = cfg.baseline.get("source")
    if source is None:
        return dense_baseline(cfg, data, device, world)
    source_data = build_dataset(dataset_config(cfg, source), device)
    log.info("transfer source: %s", source_data.tag)
    return dense_baseline(cfg, source_data, device, world, source)


def _relative(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (records stay machine-independent)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _starting_model(cfg: DictConfig, method: Method, baseline: Baseline | None, data, device: torch.device) -> nn.Module:
    """A fresh initialisation for methods that train from scratch, else a copy of the dense model (with a
    new classifier for the target when the baseline was trained on a transfer source)."""
    torch.manual_seed(int(cfg.seed))
    if method.trains_from_scratch:
        return build_model(cfg.model, data.num_classes).to(device)
    model = copy.deepcopy(baseline.model)
    return set_num_classes(model, data.num_classes) if cfg.baseline.get("source") is not None else model


def _record(cfg: DictConfig, method: Method, ctx: Context, data_tag: str, baseline: Baseline | None, cost: Cost,
            acc_compressed: float | None, acc_final: float, trained: list[FitResult], stages: list[Stage],
            device: torch.device, world: World, run_dir: Path, command: str) -> dict[str, Any]:
    """The flat result row of record/schema.py; epochs and time are summed over the stages."""
    dense = count(build_model(cfg.model, ctx.data.num_classes, pretrained=False).to(device),
                  ctx.data.input_shape)
    if "budget" in ctx.extra:
        budget.check_met(ctx.extra["budget"], getattr(cost, ctx.extra["budget"]["cost"], None),
                         getattr(dense, ctx.extra["budget"]["cost"], None))
    best = [r.acc_best for r in trained if r.epochs]
    if cfg.baseline.get("source") is not None and baseline is not None:
        ctx.extra.update(source_acc=baseline.acc, source_data=baseline.data)
    reference = ctx.extra.get("acc_reference", baseline.acc if baseline else None)
    if is_smoke(cfg):
        ctx.extra["smoke"] = True  # debug=fast: never a result (the report skips the row)
    return {
        "method": method.label, "model": str(cfg.model.name), "dataset": str(cfg.dataset.name),
        "seed": int(cfg.seed), "target": method.target,
        "base_params": dense.params, "base_params_no_bn": dense.params_no_bn, "base_macs": dense.macs,
        "params": cost.params, "params_no_bn": cost.params_no_bn, "macs": cost.macs,
        "params_reduction": 1 - cost.params / dense.params, "macs_reduction": 1 - cost.macs / dense.macs,
        "base_acc": reference, "acc_compressed": acc_compressed,
        "acc_final": acc_final, "acc_best": max(best) if best else acc_final,
        "epochs_baseline": baseline.epochs if baseline else 0, "epochs_finetune": sum(r.epochs for r in trained),
        "train_time_s": sum(r.train_time_s for r in trained), "device": device_name(device, world.world_size),
        "git_sha": git_sha(REPO), "command": command, "run_dir": _relative(run_dir),
        "experiment": str(cfg.experiment_name), "recipe": recipe_label(stages, device), "data": data_tag,
        "timestamp": utc_timestamp(), "extra": ctx.extra,
    }
