"""Every method at the same budget (experiment=compare, table compare): the runs.

    python experiments/compare.py --small [--jobs N [--pin]] [--dry-run]

`--small` (the only setting so far): ResNet-20 on the CIFAR-10 subset with the claims study's 30-epoch teachers
(`setting=subset`).  Each contender (conf/contender/) runs as a `driver.Arm` per budget point: at the first point
(50 % of the MACs) seed 0 over the lr grid, the lr with the best validation accuracy kept, seeds 1 and 2 at it;
the other points (30 % of the MACs, 50 % of the parameters) at that lr.  Every contender chooses: the fine-tuned
ones from the fine-tuning grid, those that train from scratch (lrpet, cst) from the claims study's grid around the
teachers' lr, basis and double (Adam) from the same three steps of about 3x around the paper's Adam lr.  The
longest arms start first.  A config whose row is recorded is skipped,
so the study resumes from the committed rows.  The runs train side by side and time nothing; once they are done,
each saved model is timed in this one process against the dense model (measure/retime.py; rows in
results/latency/compare.csv, read by the report), so run the study on an otherwise quiet machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from claims import SCRATCH_GRID, followers
from driver import REPO, Arm, arm_parser, exit_if_failed, report, results_csv, run_arms

from prunelab.errors import cli
from prunelab.measure.retime import default_out, retime

EXPERIMENT = "compare"
POINTS = ("macs50", "macs30", "params50")
ADAM_GRID = (3e-4, 1e-3, 3e-3)  # the fine-tuning grid's steps of about 3x, around the Adam recipe's lr
OWN_GRID = {"lrpet": SCRATCH_GRID, "cst": SCRATCH_GRID, "double": ADAM_GRID, "basis": ADAM_GRID}  # longest first
FINETUNED = ("lop", "svd", "random", "l1", "nuclear", "taylor")  # 5 fine-tuning epochs: driver.LR_GRID


def leaders() -> list[Arm]:
    """Every contender at the first budget point, where it chooses its lr on the validation split."""
    first = POINTS[0]
    own = [Arm(EXPERIMENT, (f"contender={c}", f"point={first}"), grid) for c, grid in OWN_GRID.items()]
    return own + [Arm(EXPERIMENT, (f"contender={c}", f"point={first}")) for c in FINETUNED]


def the_rest(chosen: list[Arm]) -> list[Arm]:
    """Every contender at the other points, at the lr it chose."""
    out = []
    for arm in chosen:
        contender = arm.overrides[0]
        out += followers(arm, [(contender, f"point={p}") for p in POINTS[1:]])
    return out


def main() -> None:
    args = arm_parser(__doc__.splitlines()[0]).parse_args()
    if not args.small or args.overrides:
        sys.exit("compare.py: only --small exists so far, and its settings live in conf/experiment/compare.yaml and "
                 "conf/contender/ (edit them, not the command)")
    first = leaders()
    failed = run_arms(first, args.jobs, args.pin, args.dry_run)
    if args.dry_run:
        print(f"  then every contender at {', '.join(POINTS[1:])}, at the lr it chose", flush=True)
        print(f"  then every run's saved model timed in one process -> {default_out(Path(results_csv(EXPERIMENT)))}")
    else:
        failed += run_arms(the_rest(first), args.jobs, args.pin)  # the arms that chose an lr
        rows = REPO / results_csv(EXPERIMENT)
        if cli(lambda: retime(rows, default_out(rows), REPO)):  # refused (one line printed): the runs stay recorded
            sys.exit(2)
    report(args.dry_run)
    exit_if_failed(failed)


if __name__ == "__main__":
    main()
