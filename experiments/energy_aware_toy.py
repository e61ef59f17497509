"""Toy experiment of energy-aware pruning: remove a third of an MLP's hidden units by each criterion, no fine-tuning.

    python experiments/energy_aware_toy.py [--small] [--points 1 2 5 ...] [--seeds 50] [--width 1000] ...

Per dataset (moons, circles, 4-class spiral; prunelab.methods.energy_aware_toy): train the MLP once,
then for every criterion, number n of reference points and seed, score the hidden units on n points
drawn with that seed, remove the lowest third globally and measure accuracy on the training points and
on fresh test points (optionally noisy).  Writes results/curves/energy_aware_toy.csv (tidy) with a JSON
of settings and provenance, results/plots/energy_aware_toy-regions-<dataset>.png (decision regions,
n = `--figure-points`, seed 0) and results/plots/energy_aware_toy-accuracy.png (accuracy over n).
`--small`: fewer seeds and n, shorter training, a coarser grid.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import ListedColormap

from driver import REPO
from energy_aware_stability import log_ticks
from prunelab.methods.energy_aware_toy import (
    TOY_CRITERIA, TOY_DATASETS, ToyMLP, accuracy, decision_grid, prune_globally, reference_points, toy_data,
    train_toy, unit_scores,
)
from prunelab.record import command_line, git_sha, utc_timestamp
from prunelab.report.plots import baseline_line, errorbar_lines, finish_axes, new_figure, save_png

NAME = "energy_aware_toy"
REGION_COLOURS = ListedColormap(["#c6dbef", "#fdd0a2", "#c7e9c0", "#dadaeb"])
POINT_COLOURS = np.array(["#08519c", "#a63603", "#006d2c", "#54278f"])
TEST_SEED = 10_000  # fresh test points use seed TEST_SEED + seed; the training points seed 0


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="3 seeds, n in {1, 5, 20, 100}, 1000 steps, 120x120 grid")
    p.add_argument("--datasets", nargs="+", default=list(TOY_DATASETS))
    p.add_argument("--criteria", nargs="+", default=list(TOY_CRITERIA))
    p.add_argument("--points", nargs="+", type=int, default=[1, 2, 5, 10, 20, 50, 100, 200], help="n reference points")
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--train-points", type=int, default=1000)
    p.add_argument("--test-points", type=int, default=500)
    p.add_argument("--test-noise", type=float, nargs="+", default=[0.0, 0.1], help="std of noise added to test inputs")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps of the dense training")
    p.add_argument("--fraction", type=float, default=1 / 3, help="share of all hidden units removed")
    p.add_argument("--figure-points", type=int, default=5)
    p.add_argument("--grid", type=int, default=200)
    args = p.parse_args()
    if args.small:
        args.seeds, args.points, args.steps, args.grid = 3, [1, 5, 20, 100], 1000, 120
    return args


def evaluate_pruning(args: argparse.Namespace, name: str, model: ToyMLP, train: tuple) -> list[dict]:
    """Accuracy rows after pruning by every criterion, n and seed (and of the dense model per seed)."""
    rows = []
    for seed in range(args.seeds):
        tests = {sigma: toy_data(name, args.test_points, TEST_SEED + seed) for sigma in args.test_noise}
        gen = torch.Generator().manual_seed(seed)
        tests = {sigma: (x + sigma * torch.randn(x.shape, generator=gen), y) for sigma, (x, y) in tests.items()}
        splits = {("train", 0.0): train, **{("test", sigma): xy for sigma, xy in tests.items()}}
        dense = {key: accuracy(model, *xy) for key, xy in splits.items()}
        for n in args.points:
            points = reference_points(name, n, seed)
            for criterion in args.criteria:
                pruned = prune_globally(model, unit_scores(model, criterion, *points), args.fraction)
                kept = [int(m.sum()) for m in pruned.mask]
                for (split, sigma), xy in splits.items():
                    rows.append({"dataset": name, "criterion": criterion, "points": n, "seed": seed, "split": split,
                                 "test_noise": sigma, "acc": accuracy(pruned, *xy), "dense_acc": dense[(split, sigma)],
                                 "kept_layer1": kept[0], "kept_layer2": kept[1], "kept_layer3": kept[2]})
    return rows


def regions_figure(args: argparse.Namespace, name: str, model: ToyMLP, train: tuple):
    """Decision regions of the dense model and of each criterion's pruned model (n = figure points, seed 0)."""
    x, y = train
    points = reference_points(name, args.figure_points, 0)
    models = {"dense": model} | {c: prune_globally(model, unit_scores(model, c, *points), args.fraction)
                                 for c in args.criteria}
    fig, axes = new_figure(ncols=len(models), width=3.0, height=3.2)
    classes = TOY_DATASETS[name]
    for i, (ax, (label, m)) in enumerate(zip(axes, models.items(), strict=True)):
        xs, ys, grid = decision_grid(m, x, args.grid)
        ax.pcolormesh(xs, ys, grid, cmap=ListedColormap(REGION_COLOURS.colors[:classes]), vmin=0, vmax=classes - 1,
                      shading="auto", rasterized=True)
        ax.scatter(x[:, 0], x[:, 1], s=2, c=POINT_COLOURS[y.numpy()], linewidths=0)
        if label != "dense":
            ax.scatter(points[0][:, 0], points[0][:, 1], s=40, marker="*", c="black", label="reference points")
        ax.set_aspect("equal")
        finish_axes(ax, xlabel="x1 (data units)", ylabel="x2 (data units)" if i == 0 else "",
                    title=f"{label}: train acc {accuracy(m, x, y):.1f}%", legend=i == 1)
    removed = round(args.fraction * 3 * args.width)
    fig.suptitle(f"{name}: decision regions after removing {removed} of {3 * args.width} hidden units "
                 f"(n = {args.figure_points} reference points, no fine-tuning)")
    return fig


def accuracy_figure(args: argparse.Namespace, frame: pd.DataFrame):
    part = frame[(frame["split"] == "train")]
    fig, axes = new_figure(ncols=len(args.datasets), width=4.6)
    for i, (ax, name) in enumerate(zip(axes, args.datasets, strict=True)):
        rows = part[part["dataset"] == name]
        errorbar_lines(ax, rows, x="points", y="acc", hue="criterion")
        baseline_line(ax, float(rows["dense_acc"].mean()), label="dense model")
        log_ticks(ax, rows["points"])
        finish_axes(ax, xlabel="reference points n (log scale)", ylabel="training accuracy after pruning (%)" if i == 0 else "",
                    title=f"{name}; mean ± std over {args.seeds} seeds", legend=i == 0)
    fig.suptitle(f"Toy MLPs: accuracy after removing {args.fraction:.0%} of hidden units (no fine-tuning)", fontsize=10)
    return fig


def main() -> None:
    args = arguments()
    started = time.perf_counter()
    rows, dense_train = [], {}
    for name in args.datasets:
        train = toy_data(name, args.train_points, 0)
        torch.manual_seed(0)
        model = ToyMLP(TOY_DATASETS[name], args.width)
        train_toy(model, *train, steps=args.steps, seed=0)
        dense_train[name] = accuracy(model, *train)
        print(f"{name}: dense training accuracy {dense_train[name]:.1f}%", flush=True)
        rows += evaluate_pruning(args, name, model, train)
        save_png(regions_figure(args, name, model, train), REPO / "results" / "plots" / f"{NAME}-regions-{name}.png")
    frame = pd.DataFrame(rows)
    curves = REPO / "results" / "curves"
    curves.mkdir(parents=True, exist_ok=True)
    frame.to_csv(curves / f"{NAME}.csv", index=False)
    save_png(accuracy_figure(args, frame), REPO / "results" / "plots" / f"{NAME}-accuracy.png")
    (curves / f"{NAME}.json").write_text(json.dumps({
        "command": command_line(), "git_sha": git_sha(REPO), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "timestamp": utc_timestamp(), "seconds": round(time.perf_counter() - started, 1),
        "dense_train_acc": dense_train, "settings": vars(args),
    }, indent=2) + "\n")
    summary = frame[frame["split"] == "train"].groupby(["dataset", "criterion"])["acc"].agg(["mean", "std"]).round(1)
    print(summary.to_string())


if __name__ == "__main__":
    main()
