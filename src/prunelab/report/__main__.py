"""`python -m prunelab.report [CSV ...] [--results-dir results] [--out results] [--wandb]`.

Reads every results CSV under --results-dir (plus the CSVs given; runs timed after training, under
<results-dir>/latency/, fill the latency of runs that recorded none), and writes the paper tables
to <out>/tables/<table>.md and .tex, their plots to <out>/plots/, the claims' verdict page to
<out>/claims.md and its summary into the verdict table of the README beside <out> (between its markers).  Bad input is reported as one line (file, line, column) with exit status 2, and
nothing is written.  Rows of smoke runs (`debug=fast`, `extra.smoke`) are skipped with one warning
line per file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from prunelab.errors import UserError
from prunelab.report.build import build_report
from prunelab.report.files import write_outputs
from prunelab.report.frame import PAPER_NUMBERS, find_latency_csvs, find_result_csvs
from prunelab.report.wandb_report import log_tables


def main(argv: list[str] | None = None) -> int:
    description = " ".join(__doc__.split("\n\n")[1].split())
    parser = argparse.ArgumentParser(prog="python -m prunelab.report", description=description)
    parser.add_argument("csvs", nargs="*", type=Path, help="results CSVs to read besides those under --results-dir")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="where results CSVs are found")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where tables/ and plots/ are written")
    parser.add_argument("--tables", type=Path, default=Path("conf/tables"), help="folder of table configs")
    parser.add_argument("--claims", type=Path, default=Path("conf/claims"), help="folder of claim configs "
                        "(the verdict page <out>/claims.md)")
    parser.add_argument("--paper-numbers", type=Path, help=f"default: <results-dir>/{PAPER_NUMBERS}")
    parser.add_argument("--wandb", action="store_true", help="also log every table and plot to W&B, one run per "
                        "experiment group (report/wandb_report.py)")
    parser.add_argument("--wandb-mode", choices=("offline", "online"), default="offline")
    parser.add_argument("--wandb-dir", type=Path, default=Path("outputs/report"), help="where the W&B runs go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    csvs = [*find_result_csvs(args.results_dir), *args.csvs]
    if not csvs:  # writing would replace the committed tables by empty ones
        print(f"error: no results CSV under {args.results_dir} and none given: nothing to tabulate, nothing written "
              "(run an experiment first, or pass --results-dir or CSV paths)", file=sys.stderr)
        return 2
    try:
        frames: dict = {}
        outputs = build_report(csvs, args.paper_numbers or args.results_dir / PAPER_NUMBERS, args.tables,
                               claims_dir=args.claims, readme=args.out.parent / "README.md", frames=frames,
                               latency_csvs=find_latency_csvs(args.results_dir))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_outputs(outputs, args.out)
    tables = sum(name.startswith("tables/") and name.endswith(".md") for name in outputs)
    plots = sum(name.endswith(".png") for name in outputs)
    print(f"{len(csvs)} results CSV(s) -> {tables} tables (.md, .tex) and {plots} plots under {args.out}")
    if args.wandb:
        pngs = {name.removeprefix("plots/").removesuffix(".png"): data for name, data in outputs.items()
                if name.endswith(".png")}
        groups = log_tables(frames, pngs, args.wandb_dir, args.wandb_mode)
        print(f"W&B ({args.wandb_mode}): {len(frames)} tables in {len(groups)} runs under {args.wandb_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
