"""Energy-aware pruning on CIFAR-10 (table energy_aware_cifar10): ResNet-56/110 at the paper's reductions
and at HRankPlus's rates, VGG-16-BN at HRankPlus's rates.

    python experiments/energy_aware_cifar10.py [--small] [--dry-run] [hydra overrides ...]

Full settings: the sweep of conf/experiment/energy_aware_cifar10.yaml (3 seeds, 200-epoch baselines,
150-epoch HRankPlus fine-tuning) plus the VGG-16-BN sweep.  `--small`: the CIFAR-10 subset, seed 0,
the shared short dense baseline of experiments/driver.py and `SMALL_FINETUNE_EPOCHS` epochs of
fine-tuning.  The other energy-aware drivers use the same small settings, so their ResNet-56 runs
start from the dense baselines cached here.  On a CPU shared with other jobs, OMP_NUM_THREADS=1 is
often faster.
"""

from __future__ import annotations

import driver
from driver import parser, report, sweep

EXPERIMENT = "energy_aware_cifar10"
SMALL_FINETUNE_EPOCHS = 2  # fine-tuning epochs of the small settings


def small_settings() -> list[str]:
    """Overrides of every energy-aware CIFAR-10 driver's --small run (shared, so baselines are reused)."""
    return driver.small_settings(SMALL_FINETUNE_EPOCHS)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    small = [*small_settings(), "seed=0"] if args.small else []
    sweep(EXPERIMENT, [*small, *args.overrides], args.dry_run)
    sweep(EXPERIMENT, [*small, "model=vgg16", "rate_set=hrankplus", *args.overrides], args.dry_run)
    report(args.dry_run)


if __name__ == "__main__":
    main()
