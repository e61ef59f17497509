"""From results CSVs to the contents of results/tables and results/plots, rendered in memory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from prunelab.errors import UserError
from prunelab.report.claims import load_claims, render_claims, render_summary
from prunelab.report.files import with_block
from prunelab.report.frame import load_latency, load_paper_numbers, load_results, with_latency
from prunelab.report.plots import png_bytes, table_figures
from prunelab.report.spec import TableSpec, load_table_specs
from prunelab.report.standings import render_brief, render_standings, standings, standings_frame
from prunelab.report.tables import display_frame, render_latex, render_markdown, summarize


README = "../README.md"  # the README beside the output dir, whose verdict table the report keeps current


def build_report(result_csvs: list[Path], paper_csv: Path, tables_dir: Path, plots: bool = True,
                 claims_dir: Path | None = None, readme: Path | None = None,
                 frames: dict[str, tuple[TableSpec, pd.DataFrame]] | None = None,
                 latency_csvs: list[Path] = ()) -> dict[str, bytes]:
    """Every table (.md, .tex) and plot (.png), a table's standings page where it declares `standings`, and with
    `claims_dir` the verdict page (claims.md); given a `readme`, that README (as `README`) with its generated
    blocks (the verdict table, each standings summary) between their markers; as paths relative to the output
    dir -> bytes.  `frames`, if given, receives each table's spec and cells ({name: (spec, display frame)}), a
    standings page's as `<name>-standings`.
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
    blocks: dict[str, str] = {}  # README marker name -> its generated block
    for spec in specs:
        summary = summarize(runs, spec, paper)
        outputs[f"tables/{spec.name}.md"] = render_markdown(summary, spec, paper).encode()
        outputs[f"tables/{spec.name}-wide.md"] = render_markdown(summary, spec, paper, wide=True).encode()
        outputs[f"tables/{spec.name}.tex"] = render_latex(summary, spec).encode()
        if frames is not None:
            frames[spec.name] = (spec, display_frame(summary, spec))
        for stem, figure in table_figures(summary, spec, paper) if plots else ():
            outputs[f"plots/{stem}.png"] = png_bytes(figure)
        if spec.standings:
            placed = standings(runs, spec)
            outputs[f"tables/{spec.name}-standings.md"] = render_standings(placed, spec).encode()
            if frames is not None:
                frames[f"{spec.name}-standings"] = (spec, standings_frame(placed, spec.standings))
            blocks[f"standings:{spec.name}"] = render_brief(placed, spec)
    if claims:
        outputs["claims.md"] = render_claims(claims, runs).encode()
        blocks["verdicts"] = render_summary(claims, runs)
    if readme is not None and readme.is_file() and blocks:
        text = readme.read_text()
        for name, block in blocks.items():
            text = with_block(text, block, name)
        outputs[README] = text.encode()
    return outputs
