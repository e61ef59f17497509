"""Linear over-parameterization on CIFAR-10 (tables lop_cifar10 and lop_ablation).

    python experiments/lop_cifar10.py [--small] [--jobs N [--pin]] [--dry-run] [hydra overrides ...]

Full settings: the sweeps of conf/experiment/lop_cifar10.yaml (ResNet-56 and VGG-16-BN; L1 and nuclear
pruners at ratios 0.3/0.5/0.7/0.9; plain fine-tuning vs LOP with HRankPlus's 150-epoch recipe; 3 seeds) and
lop_ablation.yaml.

`--small`: the converged small setting (`setting=subset`: the CIFAR-10 subset with a 500-image validation
split, 20-epoch cosine ResNet-20 teachers, 5 fine-tuning epochs), E = 2.  Every arm (plain fine-tuning, LOP,
and at L1 0.9 the ablation arms) picks its learning rate from `LR_GRID` on the validation split: seed 0 runs the
whole grid, the lr with the best validation accuracy is kept (prunelab.report.selection, the rule the tables
apply), seeds 1 and 2 run at it (driver.run_arms).  A config whose row is already in its results CSV is not run
again, so the study resumes from the committed rows.  Then `python -m prunelab.report`.
"""

from __future__ import annotations

from collections.abc import Sequence

from driver import Arm, arm_parser, exit_if_failed, report, run_arms, sweep

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


def small_arms(extra: Sequence[str]) -> list[Arm]:
    arms = [Arm("lop_cifar10", (*SMALL, f"method@method.pruner={p}", f"method.pruner.ratio={r}", *o, *extra))
            for p, r in CELLS for o in MAIN_ARMS.values()]
    pruner, ratio = ABLATION_CELL
    arms += [Arm("lop_ablation", (*SMALL, f"method@method.pruner={pruner}", f"method.pruner.ratio={ratio}", *o, *extra))
             for o in ABLATION_ARMS.values()]
    return arms


def main() -> None:
    args = arm_parser(__doc__.splitlines()[0]).parse_args()
    if not args.small:
        sweep("lop_cifar10", args.overrides, args.dry_run)
        sweep("lop_ablation", args.overrides, args.dry_run)
        sweep("lop_ablation", [*args.overrides, *DEGENERATE_INIT], args.dry_run)
        report(args.dry_run)
        return
    failed = run_arms(small_arms(args.overrides), args.jobs, args.pin, args.dry_run)
    report(args.dry_run)
    exit_if_failed(failed)


if __name__ == "__main__":
    main()
