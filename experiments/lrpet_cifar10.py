"""LRPET on CIFAR-10 (tables lrpet_cifar10 and lrpet_ablation): the README rows and the ablation.

    python experiments/lrpet_cifar10.py [--small] [--dry-run] [hydra overrides ...]

Full settings: the sweeps of conf/experiment/lrpet_cifar10.yaml (ResNet-56 g=0.57, ResNet-110
g=0.65, VGG-16 ranks 18/43; 400 epochs, 3 seeds) and lrpet_ablation.yaml (energy transfer x BN
rectification on ResNet-56).  `--small`: the CIFAR-10 subset, seed 0, `SMALL_EPOCHS` epochs from
scratch (dense baselines of the shared short recipe, so the energy-aware drivers reuse them).
"""

from __future__ import annotations

from driver import parser, report, small_settings, sweep

SMALL_EPOCHS = 5  # LRPET epochs from scratch in the small settings (with one warm-up epoch, like the baseline)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    small = [*small_settings(SMALL_EPOCHS), "trainer.warmup_epochs=1", "seed=0"] if args.small else []
    sweep("lrpet_cifar10", [*small, *args.overrides], args.dry_run)
    sweep("lrpet_ablation", [*small, *args.overrides], args.dry_run)
    report(args.dry_run)


if __name__ == "__main__":
    main()
