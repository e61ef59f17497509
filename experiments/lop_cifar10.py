"""Linear over-parameterization on CIFAR-10 (tables lop_cifar10 and lop_ablation).

    python experiments/lop_cifar10.py [--small] [--dry-run] [hydra overrides ...]

Full settings: the sweeps of conf/experiment/lop_cifar10.yaml (ResNet-56 and VGG-16-BN; L1 and nuclear
pruners at ratios 0.3/0.5/0.7/0.9; plain fine-tuning vs LOP with HRankPlus's 150-epoch recipe; 3 seeds) and
lop_ablation.yaml.  `--small`: the CIFAR-10 subset with the shared short dense baselines of
experiments/driver.py, ResNet-20, ratios 0.5 and 0.9, `SMALL_EPOCHS` fine-tuning epochs, seeds 0 and 1
(the ablation: seed 0; both: then the orthonormal init at E=4).  Then `python -m prunelab.report`.
"""

from __future__ import annotations

from driver import parser, report, small_settings, sweep

SMALL_EPOCHS = 2  # fine-tuning epochs of both arms in the small setting
SMALL = ["model=resnet20", "method.pruner.ratio=0.5,0.9", "seed=0,1"]
SMALL_ABLATION = ["model=resnet20", "seed=0"]
DEGENERATE_INIT = ["method.expand=4", "method.gamma=0,3000", "method.init=orthonormal"]  # the init ablation


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    small = small_settings(SMALL_EPOCHS) if args.small else []
    sweep("lop_cifar10", [*small, *(SMALL if args.small else []), *args.overrides], args.dry_run)
    ablation = [*small, *(SMALL_ABLATION if args.small else []), *args.overrides]
    sweep("lop_ablation", ablation, args.dry_run)
    sweep("lop_ablation", [*ablation, *DEGENERATE_INIT], args.dry_run)
    report(args.dry_run)


if __name__ == "__main__":
    main()
