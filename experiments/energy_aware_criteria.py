"""Pruning criteria at equal per-layer rates (table energy_aware_criteria): nuclear norm vs L1, HRank,
first-order Taylor and random, accuracy right after pruning and after fine-tuning, several seeds.

    python experiments/energy_aware_criteria.py [--small] [--dry-run] [hydra overrides ...]

Full settings: the sweep of conf/experiment/energy_aware_criteria.yaml (5 criteria x 3 seeds on
ResNet-56).  `--small`: the small settings of experiments/energy_aware_cifar10.py (whose seed-0 dense
baseline is reused from the cache) with seeds 0 and 1.
"""

from __future__ import annotations

from driver import parser, report, sweep
from energy_aware_cifar10 import small_settings

EXPERIMENT = "energy_aware_criteria"


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    small = [*small_settings(), "seed=0,1"] if args.small else []
    sweep(EXPERIMENT, [*small, *args.overrides], args.dry_run)
    report(args.dry_run)


if __name__ == "__main__":
    main()
