"""Shared helpers for the experiment drivers: run a config's sweep, then regenerate the report.

Every driver runs `python run.py -m experiment=<name>` (the sweep lives in the experiment
config's `hydra.sweeper.params`), appends its rows to results/runs/<name>.csv and calls
`python -m prunelab.report`.  `--small` swaps in settings that finish on a laptop CPU:
the CIFAR-10 subset in ../shared/data (no download) and a few short epochs.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

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


def _call(cmd: list[str], dry_run: bool) -> None:
    print("+", shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, cwd=REPO, check=True)
