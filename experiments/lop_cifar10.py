"""Linear over-parameterization on CIFAR-10 (tables lop_cifar10 and lop_ablation).

    python experiments/lop_cifar10.py [--small] [--jobs N [--pin]] [--dry-run] [hydra overrides ...]

Full settings: the sweeps of conf/experiment/lop_cifar10.yaml (ResNet-56 and VGG-16-BN; L1 and nuclear
pruners at ratios 0.3/0.5/0.7/0.9; plain fine-tuning vs LOP with HRankPlus's 150-epoch recipe; 3 seeds) and
lop_ablation.yaml.

`--small`: the converged small setting (`setting=subset`: the CIFAR-10 subset with a 500-image validation
split, 20-epoch cosine ResNet-20 teachers, 5 fine-tuning epochs), E = 2.  Every arm (plain fine-tuning, LOP,
and at L1 0.9 the ablation arms) picks its learning rate from `LR_GRID` on the validation split: seed 0 runs the
whole grid, the lr with the best validation accuracy is kept (prunelab.report.selection, the rule the tables
apply), seeds 1 and 2 run at it.  A config whose row is already in its results CSV is not run again, so the
study resumes from the committed rows.  Then `python -m prunelab.report`.
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from driver import REPO, parser, report, results_csv, sweep
from prunelab.config import compose_config
from prunelab.methods.base import build_method
from prunelab.report import load_results
from prunelab.report.selection import Selection, chosen, column

LR_GRID = (0.01, 0.03, 0.1)  # fine-tuning lr of every arm, chosen on the validation split
SEEDS = (0, 1, 2)
SMALL = ["setting=subset", "model=resnet20", "measure.latency=false"]
EXPAND = 2  # E of the small setting (the full one: 4)
CELLS = [(pruner, ratio) for pruner in ("l1", "nuclear") for ratio in (0.5, 0.9)]
MAIN_ARMS = {"ft": ["arm=ft"], "lop": ["arm=lop", f"arms.lop.expand={EXPAND}"]}
DEGENERATE_INIT = ["method.expand=4", "method.gamma=0,3000", "method.init=orthonormal"]  # the full init ablation
ABLATION_CELL = ("l1", 0.9)  # where the paper's claim is strongest
ABLATION_ARMS = {  # besides ft and lop (lr_match on) of the main sweep
    "sp_only": ["method.expand=0", "method.gamma=3000"],
    "expansion_only": [f"method.expand={EXPAND}", "method.gamma=0"],
    "expansion_only_unmatched": [f"method.expand={EXPAND}", "method.gamma=0", "method.lr_match=false"],
    "lop_unmatched": [f"method.expand={EXPAND}", "method.gamma=3000", "method.lr_match=false"],
}


@dataclass(frozen=True)
class Arm:
    """One arm of one cell: its experiment and overrides (without lr and seed), and how its rows are named."""

    experiment: str
    overrides: tuple[str, ...]

    def config(self, lr: float, seed: int) -> list[str]:
        return [f"experiment={self.experiment}", *self.overrides, f"trainer.lr={lr}", f"seed={seed}",
                f"results.csv={results_csv(self.experiment)}"]

    def label(self) -> tuple[str, str, str]:
        """(method, target, model) as the record names them."""
        cfg = compose_config(self.config(LR_GRID[0], 0))
        method = build_method(cfg.method)
        return method.label, method.target, str(cfg.model.name)


def small_arms(extra: Sequence[str]) -> list[Arm]:
    arms = [Arm("lop_cifar10", (*SMALL, f"method@method.pruner={p}", f"method.pruner.ratio={r}", *o, *extra))
            for p, r in CELLS for o in MAIN_ARMS.values()]
    pruner, ratio = ABLATION_CELL
    arms += [Arm("lop_ablation", (*SMALL, f"method@method.pruner={pruner}", f"method.pruner.ratio={ratio}", *o, *extra))
             for o in ABLATION_ARMS.values()]
    return arms


def recorded(arm: Arm) -> pd.DataFrame:
    """The arm's rows already in its results CSV (any lr, any seed)."""
    path = REPO / results_csv(arm.experiment)
    if not path.is_file():
        return pd.DataFrame()
    rows = load_results([path])
    method, target, model = arm.label()
    return rows[(rows["experiment"] == arm.experiment) & (rows["method"] == method) & (rows["target"] == target)
                & (rows["model"] == model)]


def has_row(rows: pd.DataFrame, lr: float, seed: int) -> bool:
    return bool(len(rows)) and bool(((column(rows, "extra.lr") == lr) & (rows["seed"].astype(int) == seed)).any())


def run_arm(arm: Arm, dry_run: bool, cpus: Sequence[str] = ()) -> None:
    """Seed 0 over the lr grid, the lr chosen on the validation split, the other seeds at it (`cpus`: pin each
    run to a free one of these CPUs, so that concurrent runs never share a core)."""
    with _cpu(cpus) as cpu:
        _run_arm(arm, dry_run, cpu)


def _run_arm(arm: Arm, dry_run: bool, cpu: str | None) -> None:
    for lr in LR_GRID:
        if dry_run or not has_row(recorded(arm), lr, SEEDS[0]):
            call(arm.config(lr, SEEDS[0]), dry_run, cpu)
    if dry_run:
        print(f"  then seeds {SEEDS[1:]} at the lr of {LR_GRID} with the best seed-{SEEDS[0]} val_acc", flush=True)
        return
    rows = recorded(arm)
    best = chosen(rows[column(rows, "extra.lr").isin(LR_GRID)], [], Selection("extra.lr", "extra.acc_val", SEEDS[0]))
    lr = float(best["extra.lr"].iloc[0])
    print(f"{arm.label()[:2]}: lr {lr} chosen (val {float(best['score'].iloc[0]):.2f} %)", flush=True)
    for seed in SEEDS[1:]:
        if not has_row(recorded(arm), lr, seed):
            call(arm.config(lr, seed), dry_run, cpu)


FREE_CPUS: queue.SimpleQueue[str] = queue.SimpleQueue()


@contextmanager
def _cpu(cpus: Sequence[str]) -> Iterator[str | None]:
    """A CPU of `cpus` that no other arm holds, for the duration (None: no pinning)."""
    if not cpus:
        yield None
        return
    cpu = FREE_CPUS.get()
    try:
        yield cpu
    finally:
        FREE_CPUS.put(cpu)


def call(overrides: list[str], dry_run: bool, cpu: str | None = None) -> None:
    cmd = [*(["taskset", "-c", cpu] if cpu is not None else []), sys.executable, "run.py", *overrides]
    print("+", shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def main() -> None:
    p: argparse.ArgumentParser = parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1, help="arms run at once (--small; one core each)")
    p.add_argument("--pin", action="store_true", help="pin each concurrent run to its own CPU (taskset)")
    args = p.parse_args()
    if not args.small:
        sweep("lop_cifar10", args.overrides, args.dry_run)
        sweep("lop_ablation", args.overrides, args.dry_run)
        sweep("lop_ablation", [*args.overrides, *DEGENERATE_INIT], args.dry_run)
        report(args.dry_run)
        return
    arms = small_arms(args.overrides)
    cpus = [str(i) for i in range(args.jobs)] if args.pin and not args.dry_run else []
    for cpu in cpus:
        FREE_CPUS.put(cpu)
    with ThreadPoolExecutor(max_workers=1 if args.dry_run else args.jobs) as pool:
        for future in [pool.submit(run_arm, arm, args.dry_run, cpus) for arm in arms]:
            future.result()
    report(args.dry_run)


if __name__ == "__main__":
    main()
