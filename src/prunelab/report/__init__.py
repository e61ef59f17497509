"""Paper tables and plots, regenerated from recorded runs, beside the papers' own numbers.

Pipeline: `find_result_csvs` / `load_results` (validated runs) and `load_paper_numbers`
(results/paper_numbers.csv) -> `load_table_specs` (conf/tables/*.yaml) -> `summarize`
(one row per table line) -> `render_markdown` / `render_latex` and `table_figures`.
`build_report` does all of it in memory; `python -m prunelab.report` writes the files.
Plot helpers for experiment drivers: `new_figure`, `errorbar_lines`, `paper_points`,
`baseline_line`, `finish_axes`, `figure_legend`, `save_png`, with colours from `color_for`.
"""

from prunelab.report.build import build_report
from prunelab.report.files import write_outputs
from prunelab.report.frame import find_result_csvs, load_paper_numbers, load_results
from prunelab.report.methods import METHODS, PAPER_MARKERS, color_for, marker_for
from prunelab.report.plots import (
    baseline_line,
    errorbar_lines,
    figure_legend,
    finish_axes,
    new_figure,
    paper_points,
    png_bytes,
    save_png,
    table_figures,
)
from prunelab.report.spec import TableSpec, load_table_spec, load_table_specs
from prunelab.report.tables import display_frame, mean_std, render_latex, render_markdown, select_runs, summarize

__all__ = [
    "METHODS", "PAPER_MARKERS", "TableSpec", "baseline_line", "build_report", "color_for", "display_frame",
    "errorbar_lines", "figure_legend",
    "find_result_csvs", "finish_axes", "load_paper_numbers", "load_results", "load_table_spec", "load_table_specs",
    "marker_for", "mean_std", "new_figure", "paper_points", "png_bytes", "render_latex", "render_markdown",
    "save_png", "select_runs", "summarize", "table_figures", "write_outputs",
]
