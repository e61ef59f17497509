"""Plots: reusable helpers and the figures of each paper table.

The helpers are what experiment drivers use for their own figures (decision regions,
scoring-stability curves), so that every plot of the project looks alike::

    fig, (ax,) = new_figure()
    errorbar_lines(ax, tidy, x="images", y="spearman", hue="method")   # mean ± std over the other rows
    fig.suptitle("resnet56 on cifar10: score stability")
    finish_axes(ax, xlabel="images used for scoring", ylabel="Spearman correlation to the reference")
    save_png(fig, Path("results/plots/energy_aware-stability.png"))

A method has one colour everywhere (`color_for`, from `methods.METHODS`); points quoted from a
paper have one marker per paper (`marker_for`).  PNGs carry no timestamp or version, so the
same figure gives the same bytes on the same matplotlib.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from prunelab.report.files import write_outputs
from prunelab.report.methods import color_for, marker_for
from prunelab.report.spec import TableSpec
from prunelab.report.tables import mean_std

_LINESTYLES = ("-", "--", ":", "-.")
_LINE_MARKERS = ("o", "s", "^", "v")
_AXES = {"macs": "MAC", "params": "parameter"}


def new_figure(ncols: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Figure, list[Axes]]:
    """A figure with `ncols` axes side by side (no pyplot state, so safe in scripts and tests)."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def errorbar_lines(
    ax: Axes, frame: pd.DataFrame, x: str, y: str, hue: str, yerr: str | None = None, color_by: str | None = None
) -> None:
    """Draw one line per value of `hue`, points sorted by `x`, with error bars.

    Without `yerr` the rows are aggregated first: mean ± sample std of `y` per (`hue`, `x`),
    e.g. over seeds.  Colours follow the `color_by` column (default `hue`) through
    `color_for`; lines that share a colour get different line styles and markers.
    """
    color_by = color_by or hue
    if yerr is None:
        frame = mean_std(frame, dict.fromkeys([hue, color_by, x]), y).rename(columns={"mean": y, "std": "_std"})
        yerr = "_std"
    uses: dict[str, int] = {}
    for value, part in frame.groupby(hue, sort=True):
        part = part.sort_values(x)
        colour = color_for(str(part[color_by].iloc[0]))
        style = uses.get(colour, 0)
        uses[colour] = style + 1
        ax.errorbar(
            part[x], part[y], yerr=part[yerr].fillna(0.0), label=str(value), color=colour,
            linestyle=_LINESTYLES[style % 4], marker=_LINE_MARKERS[style % 4], markersize=5, capsize=3, linewidth=1.5,
        )


def paper_points(ax: Axes, points: pd.DataFrame, x: str, y: str) -> None:
    """Scatter numbers quoted from papers at columns `x`, `y` of `points`.

    The marker follows the `paper_name` column, the colour the `paper_method` column; each
    (paper, method) gets one legend entry.
    """
    labelled: set[tuple[str, str]] = set()
    for row in points.itertuples(index=False):
        key = (row.paper_name, row.paper_method)
        ax.scatter(
            getattr(row, x), getattr(row, y), s=110, marker=marker_for(row.paper_name),
            color=color_for(row.paper_method), edgecolors="black", linewidths=0.8, zorder=5,
            label=None if key in labelled else f"paper: {row.paper_name} ({row.paper_method})",
        )
        labelled.add(key)


def baseline_line(ax: Axes, accuracy: float, label: str = "dense baseline", style: int = 0) -> None:
    """The dense model's accuracy as a horizontal line (dashed; `style` picks another dash)."""
    ax.axhline(accuracy, color=color_for("dense"), linestyle=("--", ":", "-.")[style % 3], linewidth=1, label=label)


def figure_legend(fig: Figure, handles: list, labels: list[str]) -> None:
    """The legend under the axes, one entry a line; the figure grows so the axes keep their size."""
    fig.legend(handles, labels, loc="outside lower center", fontsize=7.5, frameon=False)
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + 0.15 * len(handles) + 0.1)


def finish_axes(ax: Axes, xlabel: str, ylabel: str, title: str = "", legend: bool = True) -> None:
    """Axis labels (with units), a light grid, an optional small axes title, and the figure legend.

    With several axes, pass `legend=False` to all but the one whose entries the legend lists.
    """
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=7.5, color="0.3")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if legend and handles:
        figure_legend(ax.figure, handles, labels)


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, without timestamp or software metadata."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150, metadata={"Software": None})
    return buffer.getvalue()


def save_png(fig: Figure, path: Path) -> None:
    """Write the figure to `path` atomically."""
    write_outputs({path.name: png_bytes(fig)}, path.parent)


def _slug(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_.=]+", "_", part).strip("_")[:48] for part in parts if part)


def _labels(lines: pd.DataFrame, spec: TableSpec) -> tuple[pd.Series, str]:
    """A legend label per group (method plus what differs within this plot) and the shared context."""
    others = [c for c in spec.keys if c not in ("method", "model", "dataset", "target")] + ["git"]
    varying = [c for c in others if lines[c].nunique() > 1]
    labels = lines["method"].copy()
    for column in varying:
        labels = labels + " · " + lines[column]
    shared = [f"{c.removeprefix('extra.')} {lines[c].iloc[0]}" for c in others if c not in varying and lines[c].iloc[0]]
    return labels, textwrap.fill(" · ".join(shared), width=120)


def _paper_frame(summary: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """The table's paper rows (one per key) with the paper's name and method."""
    rows = summary[summary["paper"] != ""].drop_duplicates("paper")
    identity = paper.drop_duplicates("key").set_index("key")
    return rows.assign(
        paper_name=rows["paper"].map(identity["paper"]), paper_method=rows["paper"].map(identity["method"])
    )


def _baselines(ax: Axes, lines: pd.DataFrame) -> None:
    means = lines.groupby("data", sort=True)["base_acc"].mean().dropna()
    for style, (data, accuracy) in enumerate(means.items()):
        baseline_line(ax, accuracy, "dense baseline" if len(means) == 1 else f"dense baseline ({data})", style)


def tradeoff_figure(lines: pd.DataFrame, points: pd.DataFrame, spec: TableSpec, axis: str) -> Figure:
    """Accuracy against MAC (`axis`="macs") or parameter reduction for one model and dataset."""
    labels, context = _labels(lines, spec)
    fig, (ax,) = new_figure()
    x = f"{axis}_red"
    errorbar_lines(ax, lines.assign(label=labels), x=x, y="acc", hue="label", yerr="acc_std", color_by="method")
    _baselines(ax, lines)
    paper_points(ax, points.dropna(subset=[f"paper_{x}", "paper_acc"]), x=f"paper_{x}", y="paper_acc")
    model, dataset = lines["model"].iloc[0], lines["dataset"].iloc[0]
    fig.suptitle(f"{model} on {dataset}: top-1 accuracy vs {_AXES[axis]} reduction")
    finish_axes(ax, xlabel=f"{_AXES[axis]} reduction (%)", ylabel="top-1 accuracy (%)", title=context)
    return fig


_PARETO = {"macs": "MACs kept (% of the dense model's)", "latency": "measured time (% of the dense model's)"}


def pareto_figure(lines: pd.DataFrame, axis: str) -> Figure:
    """Accuracy against the share of the dense cost kept (MACs, or measured time = 100 / speed-up), one line per
    method through its budgets, mean ± std over seeds; the dense model as a reference line and point at 100 %."""
    kept = 100 - lines["macs_red"] if axis == "macs" else 100 / lines["speedup"]
    frame = lines.assign(kept=kept).dropna(subset=["kept"])
    fig, (ax,) = new_figure()
    errorbar_lines(ax, frame, x="kept", y="acc", hue="method", yerr="acc_std", color_by="method")
    _baselines(ax, lines)
    ax.plot([100.0], [float(lines["base_acc"].mean())], marker="*", markersize=12, color="0.2", linestyle="",
            label="dense model")
    model, dataset = lines["model"].iloc[0], lines["dataset"].iloc[0]
    fig.suptitle(f"{model} on {dataset}: every method at matched budgets")
    finish_axes(ax, xlabel=_PARETO[axis], ylabel="top-1 accuracy (%)",
                title="one point per budget: mean ± std over seeds")
    return fig


def criteria_figure(lines: pd.DataFrame, spec: TableSpec) -> Figure:
    """Accuracy right after pruning and after fine-tuning, per criterion, for one target."""
    labels, context = _labels(lines, spec)
    lines = lines.assign(label=labels).sort_values("label")
    fig, (ax,) = new_figure()
    for i, line in enumerate(lines.itertuples(index=False)):
        colour = color_for(line.method)
        ax.plot([i - 0.12, i + 0.12], [line.acc_compressed, line.acc], color=colour, linewidth=1, alpha=0.6)
        for offset, mean, std, face in ((-0.12, line.acc_compressed, line.acc_compressed_std, "white"),
                                        (0.12, line.acc, line.acc_std, colour)):
            ax.errorbar(i + offset, mean, yerr=0 if pd.isna(std) else std, color=colour, marker="o",
                        markerfacecolor=face, capsize=3)
    _baselines(ax, lines)
    ax.set_xticks(range(len(lines)), list(lines["label"]), rotation=15 if len(lines) > 4 else 0)
    model, dataset, target = lines["model"].iloc[0], lines["dataset"].iloc[0], lines["target"].iloc[0]
    fig.suptitle(f"{model} on {dataset}: pruning criteria, before and after fine-tuning")
    finish_axes(ax, xlabel="criterion", ylabel="top-1 accuracy (%)", title=f"target {target}\n{context}", legend=False)
    handles, labels = ax.get_legend_handles_labels()
    phases = [
        Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle=""),
        Line2D([], [], color="0.3", marker="o", linestyle=""),
    ]
    figure_legend(fig, [*phases, *handles], ["right after pruning", "after fine-tuning", *labels])
    return fig


def target_rate(target: str) -> tuple[float, str]:
    """(the value of `rate=` in a target string, NaN without one; the rest of the target)."""
    parts = [p.strip() for p in target.split(";") if p.strip()]
    rate = next((float(p.partition("=")[2]) for p in parts if p.startswith("rate=")), math.nan)
    return rate, "; ".join(p for p in parts if not p.startswith("rate="))


def rate_figure(lines: pd.DataFrame, references: pd.DataFrame, spec: TableSpec, model: str, dataset: str) -> Figure:
    """Accuracy against the target's global rate (in %), one line per the rest of the target: our runs solid with
    error bars over seeds, the paper's values (rows it pairs with a target, run or not) dashed with open markers."""
    fig, (ax,) = new_figure()
    context = ""
    if len(lines):
        labels, context = _labels(lines, spec)
        settings = [target_rate(t) for t in lines["target"]]
        ours = lines.assign(rate=[100 * r for r, _ in settings],
                            label=[f"{label} · {rest}" for label, (_, rest) in zip(labels, settings, strict=True)])
        errorbar_lines(ax, ours.dropna(subset=["rate"]), x="rate", y="acc", hue="label", yerr="acc_std",
                       color_by="method")
        _baselines(ax, lines)
    quoted = references.dropna(subset=["paper_acc"])
    settings = [target_rate(t) for t in quoted["target"]]
    quoted = quoted.assign(rate=[100 * r for r, _ in settings], rest=[rest for _, rest in settings])
    for i, (rest, part) in enumerate(quoted.dropna(subset=["rate"]).groupby("rest", sort=True)):
        part = part.sort_values("rate")
        ax.plot(part["rate"], part["paper_acc"], linestyle="--", color=f"C{i % 10}", markerfacecolor="white",
                marker=marker_for(part["paper_name"].iloc[0]), markersize=7, linewidth=1,
                label=f"paper: {part['paper_name'].iloc[0]} · {rest}")
    fig.suptitle(f"{model} on {dataset}: top-1 accuracy vs global pruning rate")
    finish_axes(ax, xlabel="global pruning rate (%)", ylabel="top-1 accuracy (%)", title=context)
    return fig


def table_figures(summary: pd.DataFrame, spec: TableSpec, paper: pd.DataFrame) -> Iterator[tuple[str, Figure]]:
    """(file stem, figure) for each plot the table declares, per model and dataset with runs (the rate plot
    also per model and dataset that only the paper's rows have: the paper's own figure)."""
    runs = summary[summary["kind"] == "run"].drop_duplicates(list(spec.keys))
    papers = _paper_frame(summary, paper)
    if "rate" in spec.plots:
        quoted = summary[summary["paper"] != ""].drop_duplicates(["model", "dataset", "target", "paper"])
        quoted = quoted.assign(paper_name=quoted["paper"].map(paper.drop_duplicates("key").set_index("key")["paper"]))
        pairs = sorted({*zip(runs["model"], runs["dataset"]), *zip(quoted["model"], quoted["dataset"])})
        for model, dataset in pairs:
            lines = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
            refs = quoted[(quoted["model"] == model) & (quoted["dataset"] == dataset)]
            yield _slug(spec.name, model, dataset, "rate"), rate_figure(lines, refs, spec, model, dataset)
    for (model, dataset), lines in runs.groupby(["model", "dataset"], sort=True):
        points = papers[(papers["model"] == model) & (papers["dataset"] == dataset)]
        for axis in (a for a in spec.plots if a in _AXES):
            yield _slug(spec.name, model, dataset, axis), tradeoff_figure(lines, points, spec, axis)
        for axis in (a.removeprefix("pareto_") for a in spec.plots if a.startswith("pareto_")):
            if axis == "macs" or lines["speedup"].notna().any():  # latency: only where runs were timed
                yield _slug(spec.name, model, dataset, f"pareto_{axis}"), pareto_figure(lines, axis)
        if "criteria" in spec.plots:
            for target, part in lines.groupby("target", sort=True):
                yield _slug(spec.name, model, dataset, "criteria", target), criteria_figure(part, spec)
