"""Cheap spatial transformations on CIFAR-10 (tables cst_cifar10, cst_family and cst_groups).

    python experiments/cst_cifar10.py [--small] [--dry-run] [hydra overrides ...]

Full settings: the sweeps of conf/experiment/cst_cifar10.yaml (VGG-16-BN one-FC and ResNet-56 at rates
0.5/0.7/0.9, 300 epochs from scratch with a 40-epoch ramp, 3 seeds), cst_family.yaml and cst_groups.yaml
(both panels).  `--small`: the CIFAR-10 subset, ResNet-20, `SMALL_EPOCHS` epochs from scratch with a
`SMALL_RAMP`-epoch ramp, beside the shared 5-epoch dense baselines of experiments/driver.py: rates 0.5
and 0.7 with seeds 0 and 1; the families at rate 0.7 and G = 1/2/4/8 at rates 0.8 and 0.9 (at least one
template per layer) with seed 0.  Then `python -m prunelab.report`.
"""

from __future__ import annotations

from driver import parser, report, small_settings, sweep

SMALL_EPOCHS = 5  # epochs from scratch, as many as the small dense baseline's
SMALL_RAMP = 2  # pruning-ramp epochs of the small runs
SMALL = ["model=resnet20", f"method.ramp_epochs={SMALL_RAMP}", "trainer.warmup_epochs=1"]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    small = [*small_settings(SMALL_EPOCHS), *SMALL] if args.small else []
    sizes = {
        "cst_cifar10": ["method.rate=0.5,0.7", "seed=0,1"],
        "cst_family": ["method.rate=0.7", "seed=0"],
        "cst_groups": ["method.rate=0.8,0.9", "seed=0"],
    }
    for experiment, sweep_size in sizes.items():
        sweep(experiment, [*small, *(sweep_size if args.small else []), *args.overrides], args.dry_run)
    if not args.small:
        sweep("cst_groups", ["method.min_templates=8", *args.overrides], args.dry_run)  # the right panel
    report(args.dry_run)


if __name__ == "__main__":
    main()
