"""Shared helpers for the experiment drivers: run a config's sweep, then regenerate the report.

Every driver runs `python run.py -m experiment=<name>` (the sweep lives in the experiment
config's `hydra.sweeper.params`), appends its rows to results/runs/<name>.csv and calls
`python -m prunelab.report`.  `--small` swaps in settings that finish on a laptop CPU:
the CIFAR-10 subset in ../shared/data (no download) and a few short epochs.

Comparisons whose arms train different parametrisations run as `Arm`s (`run_arms`): each arm picks its
fine-tuning lr from `LR_GRID` on the validation split (seed 0 runs the grid, the best validation accuracy
wins, the other seeds run at it; prunelab.report.selection is the rule the tables apply too), and a config
whose row is already in its results CSV is skipped, so a study resumes from the committed rows.
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from filelock import FileLock

from prunelab import budget
from prunelab.config import compose_config
from prunelab.methods.base import build_method
from prunelab.report import load_results
from prunelab.report.frame import extra_values
from prunelab.report.selection import Selection, chosen, column

REPO = Path(__file__).resolve().parents[1]
SUBSET = "../shared/data/cifar-10-subset"  # relative to the repository root, where run.py runs


def subset_data() -> list[str]:
    """Overrides that read the real CIFAR-10 slice beside the repository, offline."""
    return [f"dataset.root={SUBSET}", "dataset.download=false"]


SMALL_BASELINE_EPOCHS = 5  # dense baselines of every --small run (shared through the baseline cache)
SMALL_BATCH = 64  # twice the steps of batch 128 in the few small epochs


def small_settings(epochs: int) -> list[str]:
    """Overrides of every driver's --small run: the subset, a `SMALL_BASELINE_EPOCHS`-epoch dense
    baseline (the same in every driver, so it is trained once and then read from the cache) and
    `epochs` epochs of the method's own training, both at batch `SMALL_BATCH`."""
    return [*subset_data(), *short_recipes(SMALL_BASELINE_EPOCHS, epochs, SMALL_BATCH)]


def short_recipes(baseline_epochs: int, epochs: int, batch_size: int = 128) -> list[str]:
    """Overrides that shorten both training phases (keeping each recipe's optimiser settings).

    Milestones make no sense in a few epochs: both phases use a cosine schedule instead, and
    the dense baseline (trained from scratch at lr 0.1) warms up for its first epoch.
    """
    out = ["baseline.trainer.warmup_epochs=1"]
    for prefix, n in (("baseline.trainer", baseline_epochs), ("trainer", epochs)):
        out += [f"{prefix}.epochs={n}", f"{prefix}.schedule=cosine", f"{prefix}.batch_size={batch_size}",
                f"{prefix}.eval_batch_size=500"]
    return out


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--small", action="store_true", help="CIFAR-10 subset and short recipes (CPU, minutes)")
    p.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides passed to run.py")
    return p


def results_csv(experiment: str) -> str:
    """Where a driver's rows go, relative to the repository root."""
    return f"results/runs/{experiment}.csv"


def sweep(experiment: str, overrides: Sequence[str], dry_run: bool = False) -> None:
    """`python run.py -m experiment=<experiment> ...`, rows to results/runs/<experiment>.csv."""
    cmd = [sys.executable, "run.py", "-m", f"experiment={experiment}",
           f"results.csv={results_csv(experiment)}", *overrides]
    _call(cmd, dry_run)


def report(dry_run: bool = False) -> None:
    _call([sys.executable, "-m", "prunelab.report"], dry_run)


def _call(cmd: list[str], dry_run: bool, env: dict[str, str] | None = None) -> None:
    print("+", shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, cwd=REPO, check=True, env=env)


LR_GRID = (0.01, 0.03, 0.1)  # the fine-tuning lr every arm of a comparison chooses from, on the validation split
SEEDS = (0, 1, 2)


COMPOSING = threading.Lock()


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: its experiment and overrides (without lr and seed), the lr grid it chooses from
    on the validation split (the setting must hold one out: `setting=subset`), and the seeds it runs."""

    experiment: str
    overrides: tuple[str, ...]
    grid: tuple[float, ...] = LR_GRID
    seeds: tuple[int, ...] = SEEDS

    def config(self, lr: float, seed: int) -> list[str]:
        return [f"experiment={self.experiment}", *self.overrides, f"trainer.lr={lr}", f"seed={seed}",
                f"results.csv={results_csv(self.experiment)}"]

    def label(self) -> dict[str, str]:
        """The record's columns that tell this arm's runs from those of the experiment's other arms."""
        with COMPOSING:  # Hydra's global state: one composition at a time across the arms' threads
            cfg = compose_config(self.config(self.grid[0], 0))
        method = build_method(cfg.method)
        out = {"method": method.label, "target": method.target, "model": str(cfg.model.name),
               "dataset": str(cfg.dataset.name)}
        asked = budget.requested(cfg)
        if asked is not None:  # the target is decided while the run prunes: the budget tells the arms apart
            del out["target"]
            out["extra.budget_asked"] = f"{asked[0]}<={asked[1]:g}"
        return out


def recorded(arm: Arm) -> pd.DataFrame:
    """The arm's rows already in its results CSV (any lr, any seed)."""
    path = REPO / results_csv(arm.experiment)
    if not path.is_file():
        return pd.DataFrame()
    with FileLock(f"{path}.lock"):  # the lock every run takes to append its row: never read half a row
        rows = load_results([path])
    keep = rows["experiment"] == arm.experiment
    for key, value in arm.label().items():
        values = extra_values(rows, key.removeprefix("extra.")) if key.startswith("extra.") else rows[key]
        keep &= values.astype("string").fillna("") == value
    return rows[keep]


def has_row(rows: pd.DataFrame, lr: float, seed: int) -> bool:
    return bool(len(rows)) and bool(((column(rows, "extra.lr") == lr) & (rows["seed"].astype(int) == seed)).any())


def chosen_lr(arm: Arm) -> float | None:
    """The lr `arm` chose on the validation split (None until its seed-0 grid is recorded)."""
    rows = recorded(arm)
    rows = rows[column(rows, "extra.lr").isin(arm.grid)] if len(rows) else rows
    if len(rows) == 0 or set(column(rows[rows["seed"].astype(int) == arm.seeds[0]], "extra.lr")) != set(arm.grid):
        return None
    return float(chosen(rows, [], Selection("extra.lr", "extra.acc_val", arm.seeds[0]))["extra.lr"].iloc[0])


def arm_parser(description: str) -> argparse.ArgumentParser:
    """`parser` plus the options of drivers that run `Arm`s."""
    p = parser(description)
    p.add_argument("--jobs", type=int, default=1, help="arms run at once (one core each)")
    p.add_argument("--pin", action="store_true", help="pin each concurrent run to its own CPU (taskset)")
    return p


def run_arms(arms: Sequence[Arm], jobs: int = 1, pin: bool = False, dry_run: bool = False) -> list[Arm]:
    """Every arm (`run_arm`), `jobs` arms at a time, each run pinned to its own CPU with `pin`; returns the arms
    that failed (each said so when it failed; the others ran on), for `exit_if_failed` after the report."""
    free: queue.SimpleQueue[str] | None = None
    if pin and not dry_run:
        free = queue.SimpleQueue()
        for cpu in range(jobs):
            free.put(str(cpu))
    with ThreadPoolExecutor(max_workers=1 if dry_run else jobs) as pool:
        futures = [(arm, pool.submit(run_arm, arm, dry_run, free)) for arm in arms]
    return [arm for arm, future in futures if future.exception() is not None]


def exit_if_failed(failed: Sequence[Arm]) -> None:
    """Exit status 1, naming them, if any arm failed (its rows so far stay recorded; a rerun resumes it)."""
    if failed:
        names = "; ".join(f"{arm.experiment} {' '.join(arm.overrides)}".strip() for arm in failed)
        sys.exit(f"{len(failed)} arm(s) failed (see above; rerun to resume them): {names}")


def run_arm(arm: Arm, dry_run: bool, free: queue.SimpleQueue[str] | None = None) -> None:
    """Seed 0 over the lr grid, the lr chosen on the validation split, the other seeds at it (`free`: CPUs no
    other arm holds; the arm's runs are pinned to one of them, so that concurrent runs never share a core)."""
    with _cpu(free) as cpu:
        try:
            _run_arm(arm, dry_run, cpu)
        except BaseException:
            print(f"arm {arm.experiment} {' '.join(arm.overrides)} failed (the other arms go on):\n"
                  f"{traceback.format_exc()}", file=sys.stderr, flush=True)
            raise


def _run_arm(arm: Arm, dry_run: bool, cpu: str | None) -> None:
    for lr in arm.grid:
        if dry_run or not has_row(recorded(arm), lr, arm.seeds[0]):
            call(arm.config(lr, arm.seeds[0]), dry_run, cpu)
    if dry_run:
        print(f"  then seeds {arm.seeds[1:]} at the lr of {arm.grid} with the best seed-{arm.seeds[0]} val_acc", flush=True)
        return
    lr = chosen_lr(arm)
    print(f"{arm.label()}: lr {lr} chosen on the validation split", flush=True)
    for seed in arm.seeds[1:]:
        if not has_row(recorded(arm), lr, seed):
            call(arm.config(lr, seed), dry_run, cpu)


@contextmanager
def _cpu(free: queue.SimpleQueue[str] | None) -> Iterator[str | None]:
    """A CPU of `free` for the duration, put back after (None: no pinning)."""
    if free is None:
        yield None
        return
    cpu = free.get()
    try:
        yield cpu
    finally:
        free.put(cpu)


def call(overrides: list[str], dry_run: bool, cpu: str | None = None) -> None:
    """One run of an arm, on one thread (pinned to `cpu` if given)."""
    cmd = [*(["taskset", "-c", cpu] if cpu is not None else []), sys.executable, "run.py", *overrides]
    _call(cmd, dry_run, env={**os.environ, "OMP_NUM_THREADS": "1"})
