"""Each paper's central claims in the converged small setting (results/claims.md, conf/claims/*.yaml).

    python experiments/claims.py [--only energy_aware|lrpet|basis|lop|cst ...] [--jobs N [--pin]] [--dry-run]

The arms of `conf/experiment/claims_*.yaml` (ResNet-20 on the CIFAR-10 subset, 30-epoch teachers, a 500-image
validation split; the basis claims in a CIFAR-10 0-4 -> 5-9 / digits transfer setting), run as `driver.Arm`s:
seed 0 over the arm's lr grid, the lr with the best validation accuracy kept, seeds 1 and 2 at it.  Arms that
train the same parametrisation as an arm already chosen (LRPET's ablations, CST's scalar arms at rate 0.9 with 1, 2
and 4 groups) run at that arm's chosen lr, after it; CST's affine arm, whose learned warps are parameters of their
own, chooses its lr from the same grid.  A config whose row is already in results/runs/claims_*.csv is not run
again, so the study resumes from the committed rows.  `lop` runs experiments/lop_cifar10.py --small (its rows are
results/runs/lop_cifar10.csv).  Then `python -m prunelab.report` writes the tables and the verdict page.

Time on a 2-core CPU with --jobs 2 --pin (one run per core): energy_aware about 15 minutes, basis 30, lrpet 70
(its ablation 40 more), cst 120 (its family and group arms 75 more), lop 100 (its own study).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence

import torch

from driver import REPO, Arm, arm_parser, chosen_lr, exit_if_failed, report, run_arms
from prunelab.record import command_line, device_name, git_sha, utc_timestamp
from prunelab.train.distributed import World, pick_device

SCRATCH_GRID = (0.05, 0.1, 0.2)  # arms trained from scratch choose from around the teacher's lr (0.1)
ADAM_LR = (1e-3,)  # basis pruning's recipe (conf/trainer/basis_adam.yaml); every basis arm trains the same scalings
FINETUNE = ("trainer=subset_finetune", "trainer.epochs=5")
STABILITY_CSV = REPO / "results" / "curves" / "claims_energy_aware_stability.csv"
STABILITY = ["experiment=energy_aware_stability", "setting=subset", "model=resnet20", "measure.latency=false",
             "method.compress_rate='[0.]+[0.15]*2+[0.4]*9'", "seed=0", "stability.criteria=[nuclear,hrank]",
             "stability.images=[64]", "stability.reference_images=640", "stability.noise=[]",
             "stability.seeds=[0,1,2]", "stability.accuracy_images=[]"]


def energy_aware() -> list[Arm]:
    return [Arm("claims_energy_aware", (f"method={m}",)) for m in ("nuclear", "l1", "hrank", "random")]


def basis() -> list[Arm]:
    variants = (("method=basis",), ("method=basis", "method.criterion=magnitude"), ("method=taylor_gates",),
                ("method=double",))
    return [Arm("claims_basis", (f"dataset={data}", *v), ADAM_LR) for data in ("cifar10_5to9", "digits")
            for v in variants]


LRPET = Arm("claims_lrpet", (), SCRATCH_GRID)
LRPET_ABLATIONS = (("method.energy_transfer=none",), ("method.bn_rectify=false",))
CST = Arm("claims_cst", ("method.rate=0.5",), SCRATCH_GRID)
CST_HIGH_RATE = ("method.rate=0.9", "method.min_templates=1")  # at 0.9 a floor of 8 would bind in 16-wide layers
CST_GROUPS = ((), ("method.groups=1",), ("method.groups=4",))  # the scalar family: rate 0.5's parametrisation
# learned affine warps add parameters of their own (a different parametrisation): the arm chooses its own lr
CST_AFFINE = Arm("claims_cst", (*CST_HIGH_RATE, "method.family=affine"), SCRATCH_GRID)


def lrpet() -> list[Arm]:
    svd = Arm("claims_lrpet", ("method=svd", "method.pruner.ratio=0", *FINETUNE))
    return [LRPET, svd]


def cst() -> list[Arm]:
    dense = Arm("claims_cst", ("method.rate=0",), SCRATCH_GRID)
    l1 = Arm("claims_cst", ("method=l1", "method.ratio=0.46", "method.reinit_after_pruning=false", *FINETUNE))
    return [CST, dense, l1, CST_AFFINE]


def followers(leader: Arm, variants: Sequence[Sequence[str]], base: Sequence[str] = ()) -> list[Arm]:
    """Arms of `leader`'s experiment and parametrisation at the lr `leader` chose (none before it has chosen)."""
    lr = chosen_lr(leader)
    return [] if lr is None else [Arm(leader.experiment, (*base, *v), (lr,)) for v in variants]


def second_phase() -> list[Arm]:
    return [*followers(LRPET, LRPET_ABLATIONS), *followers(CST, CST_GROUPS, CST_HIGH_RATE)]


def score_stability(dry_run: bool) -> None:
    """Spearman correlation of each layer's scores from 64 images with those from 640 (teacher of seed 0, three
    image streams; experiments/energy_aware_stability.py), averaged over layers: one row per criterion and stream."""
    print("+ score stability:", " ".join(STABILITY), flush=True)
    if dry_run or STABILITY_CSV.is_file():
        return
    from energy_aware_stability import load_config, score_agreement

    cfg = load_config(STABILITY)
    rows, reference = score_agreement(cfg)
    spearman = rows[(rows["study"] == "images") & (rows["metric"] == "spearman")]
    out = spearman.groupby(["criterion", "images", "seed"], as_index=False).agg(spearman=("value", "mean"),
                                                                                 layers=("value", "size"))
    out.insert(2, "reference_images", reference)
    STABILITY_CSV.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(STABILITY_CSV, index=False, float_format="%.6f")
    STABILITY_CSV.with_suffix(".json").write_text(json.dumps({
        "command": command_line(), "overrides": STABILITY, "git_sha": git_sha(REPO),
        "device": device_name(pick_device(str(cfg.device), World())), "torch": torch.__version__,
        "timestamp": utc_timestamp()}, indent=2) + "\n")


def lop(dry_run: bool, jobs: int, pin: bool) -> list[Arm]:
    from lop_cifar10 import small_arms

    return run_arms(small_arms([]), jobs, pin, dry_run)


PARTS: dict[str, Callable[[], list[Arm]]] = {"energy_aware": energy_aware, "basis": basis, "lrpet": lrpet,
                                             "cst": cst}
ORDER = ("energy_aware", "basis", "lrpet", "cst", "lop")  # cheapest first: whole verdicts land early


def main() -> None:
    p = arm_parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=ORDER, default=list(ORDER), help="the papers whose claims to run")
    args = p.parse_args()
    if args.overrides:
        sys.exit("claims.py: the claims' settings live in conf/experiment/claims_*.yaml; edit them, not the command")
    parts = [part for part in ORDER if part in args.only]
    if "energy_aware" in parts:
        score_stability(args.dry_run)
    failed = run_arms([arm for part in parts if part in PARTS for arm in PARTS[part]()], args.jobs, args.pin,
                      args.dry_run)
    failed += run_arms(second_phase() if not args.dry_run else [], args.jobs, args.pin, args.dry_run)
    if "lop" in parts:
        failed += lop(args.dry_run, args.jobs, args.pin)
    report(args.dry_run)
    exit_if_failed(failed)


if __name__ == "__main__":
    main()
