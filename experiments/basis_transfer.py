"""Basis and double pruning for transfer learning (tables basis_transfer and basis_criteria), with their curves.

    python experiments/basis_transfer.py [--small] [--dry-run] [hydra overrides ...]

Full settings: the sweeps of conf/experiment/basis_transfer.yaml (channel / basis / double, ImageNet
ResNet-50 -> CIFAR-10 and MNIST, 3 seeds) and basis_criteria.yaml (Taylor, magnitude, energy rule); they
need the pretrained weights and both datasets.  `--small` (offline, a CPU, minutes): the source is a
ResNet-20 trained here on CIFAR-10 classes 0-4 of the subset in ../shared/data (`SMALL_SOURCE_EPOCHS`
epochs), the targets are scikit-learn's 8x8 digits (resized to 32) and CIFAR-10 classes 5-9 of the subset,
with a short schedule (`SMALL_SCHEDULE`), seed 0.

After the sweeps: `python -m prunelab.report`, then from the runs' `extra` the tidy curves
results/curves/basis_rounds.csv (one row per evaluation of every round: parameter reduction, validation
and test accuracy) and results/curves/basis_kept.csv (kept fraction of each layer's bases), and the plots
results/plots/basis_rounds-<data>.png (test accuracy vs parameter reduction over the rounds, one line
per criterion and method) and results/plots/basis_kept-<data>.png (kept-basis fraction per layer).
"""

from __future__ import annotations

import json

import pandas as pd

from driver import REPO, parser, report, results_csv, subset_data, sweep
from prunelab.record import read_results
from prunelab.report.plots import errorbar_lines, finish_axes, new_figure, save_png

EXPERIMENTS = ("basis_transfer", "basis_criteria")
CURVES, PLOTS = REPO / "results" / "curves", REPO / "results" / "plots"
SMALL_TARGETS = "dataset=digits,cifar10_5to9"
SMALL_SOURCE_EPOCHS = 8
# the shortest reference phase of docs/papers/basis_pruning.md §3.3 (10 epochs: the reference must be trained, or pruning looks free), one epoch per
# round; double's gate pruner follows these keys (conf/method/double.yaml).  A fifth of the small targets' training
# images is held out, so that one image is less than a point of validation accuracy.
SMALL_SCHEDULE = ["method.reference_epochs=10", "method.max_rounds=12", "method.scoring.batches=8",
                  "method.fraction=0.15", "dataset.val_images=0.2"]


def small_settings() -> list[str]:
    """The offline transfer setting of `--small` (module docstring)."""
    source = ["dataset@baseline.source=cifar10_0to4", *[o.replace("dataset.", "baseline.source.") for o in subset_data()]]
    recipe = ["trainer@baseline.trainer=quickstart_baseline", f"baseline.trainer.epochs={SMALL_SOURCE_EPOCHS}",
              "baseline.trainer.batch_size=64", "baseline.trainer.warmup_epochs=1"]
    return ["model=resnet20", *source, *recipe, SMALL_TARGETS, *subset_data(), "dataset.resolution=32",
            "trainer.batch_size=64", *SMALL_SCHEDULE, "seed=0"]


def rounds_frame(rows: list[dict]) -> pd.DataFrame:
    """One tidy row per evaluation in every run's rounds (taylor_gates and double: both stages)."""
    out = []
    for row in rows:
        extra = json.loads(row["extra"]) if isinstance(row["extra"], str) else row["extra"]
        stages = [("basis" if row["method"] != "taylor_gates" else "gates", extra.get("rounds", []))]
        stages += [("gates", extra.get("pruner", {}).get("rounds", []))]
        line = row["method"] if row["method"] != "basis" else f"basis ({extra.get('criterion', '')})"
        for stage, history in stages:
            out += [{"experiment": row["experiment"], "line": line, "method": row["method"], "stage": stage,
                     "data": row["data"], "seed": row["seed"], **h,
                     "params_reduction": 100 * (1 - h["params"] / row["base_params"])} for h in history]
    return pd.DataFrame(out)


def kept_frame(rows: list[dict]) -> pd.DataFrame:
    """One tidy row per basis layer of every run: its kept fraction of the full rank."""
    out = []
    for row in rows:
        extra = json.loads(row["extra"]) if isinstance(row["extra"], str) else row["extra"]
        for i, (layer, kept) in enumerate(extra.get("kept_bases", {}).items()):
            line = row["method"] if row["method"] != "basis" else f"basis ({extra.get('criterion', '')})"
            out.append({"line": line, "data": row["data"], "seed": row["seed"], "layer": layer, "index": i,
                        "kept_fraction": kept / extra["ranks"][layer]})
    return pd.DataFrame(out)


def figures(rounds: pd.DataFrame, kept: pd.DataFrame) -> None:
    for data, part in rounds[rounds["event"] == "trained"].groupby("data"):
        fig, (ax,) = new_figure()
        errorbar_lines(ax, part.assign(line=part["line"] + " / " + part["stage"]), x="params_reduction",
                       y="test_acc", hue="line", color_by="method")
        finish_axes(ax, xlabel="parameter reduction vs the undecomposed network (%)", ylabel="test top-1 (%)",
                    title="one point per round: the model trained after the round's pruning")
        fig.suptitle(f"basis pruning rounds on {data}")
        save_png(fig, PLOTS / f"basis_rounds-{slug(data)}.png")
    for data, part in kept.groupby("data"):
        fig, (ax,) = new_figure(width=9.6)
        errorbar_lines(ax, part, x="index", y="kept_fraction", hue="line", color_by="line")
        finish_axes(ax, xlabel="basis layer (module order)", ylabel="kept bases / full rank",
                    title="after the last accepted round")
        fig.suptitle(f"kept bases per layer on {data}")
        save_png(fig, PLOTS / f"basis_kept-{slug(data)}.png")


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    small = small_settings() if args.small else []
    for experiment in EXPERIMENTS:
        sweep(experiment, [*small, *args.overrides], args.dry_run)
    report(args.dry_run)
    if args.dry_run:
        return
    rows = [r for e in EXPERIMENTS for r in read_results(REPO / results_csv(e))]
    CURVES.mkdir(parents=True, exist_ok=True)
    rounds, kept = rounds_frame(rows), kept_frame(rows)
    rounds.to_csv(CURVES / "basis_rounds.csv", index=False)
    kept.to_csv(CURVES / "basis_kept.csv", index=False)
    figures(rounds, kept)


if __name__ == "__main__":
    main()
