"""From results CSVs to the contents of results/tables and results/plots, rendered in memory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from prunelab.errors import UserError
from prunelab.report.claims import load_claims, render_claims, render_summary, with_summary
from prunelab.report.frame import load_latency, load_paper_numbers, load_results, with_latency
from prunelab.report.plots import png_bytes, table_figures
from prunelab.report.spec import TableSpec, load_table_specs
from prunelab.report.tables import display_frame, render_latex, render_markdown, summarize


README = "../README.md"  # the README beside the output dir, whose verdict table the report keeps current


def build_report(result_csvs: list[Path], paper_csv: Path, tables_dir: Path, plots: bool = True,
                 claims_dir: Path | None = None, readme: Path | None = None,
                 frames: dict[str, tuple[TableSpec, pd.DataFrame]] | None = None,
                 latency_csvs: list[Path] = ()) -> dict[str, bytes]:
    """Every table (.md, .tex) and plot (.png), and with `claims_dir` the verdict page (claims.md) and, given a
    `readme` with verdict markers, that README with its verdict table (as `README`), as paths relative to the output
    dir -> bytes.  `frames`, if given, receives each table's spec and cells ({name: (spec, display frame)}).
    `latency_csvs`: runs timed after training (measure/retime.py), read where a run recorded no latency itself.

    Loads and validates all inputs before rendering anything, so a bad CSV or config raises
    a `UserError` and nothing is produced.
    """
    runs = with_latency(load_results(result_csvs), load_latency(latency_csvs))
    paper = load_paper_numbers(paper_csv)
    specs = load_table_specs(tables_dir, set(paper["key"]))
    claims = load_claims(claims_dir) if claims_dir is not None and claims_dir.is_dir() else []
    if not specs:
        raise UserError(f"{tables_dir}: no table configs (*.yaml)")
    outputs: dict[str, bytes] = {}
    for spec in specs:
        summary = summarize(runs, spec, paper)
        outputs[f"tables/{spec.name}.md"] = render_markdown(summary, spec, paper).encode()
        outputs[f"tables/{spec.name}-wide.md"] = render_markdown(summary, spec, paper, wide=True).encode()
        outputs[f"tables/{spec.name}.tex"] = render_latex(summary, spec).encode()
        if frames is not None:
            frames[spec.name] = (spec, display_frame(summary, spec))
        for stem, figure in table_figures(summary, spec, paper) if plots else ():
            outputs[f"plots/{stem}.png"] = png_bytes(figure)
    if claims:
        outputs["claims.md"] = render_claims(claims, runs).encode()
        if readme is not None and readme.is_file():
            outputs[README] = with_summary(readme.read_text(), render_summary(claims, runs)).encode()
    return outputs
