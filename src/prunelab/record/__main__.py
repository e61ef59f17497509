"""Append a finished run's record to a results CSV without retraining:

    python -m prunelab.record RUN_DIR/metrics.json --csv results/runs.csv

For a run whose own append failed (a full disk, a read-only folder): the row is checked and appended
exactly as the run would have appended it (locked; the header must be current).  A run already in the
CSV (same run_dir and timestamp) is not added again: running the command twice leaves one row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prunelab.errors import UserError, cli
from prunelab.record.results import append_row


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m prunelab.record", description=__doc__.splitlines()[0])
    p.add_argument("metrics", type=Path, help="a run's metrics.json")
    p.add_argument("--csv", type=Path, required=True, help="the results CSV to append to")
    args = p.parse_args(argv)

    def body() -> None:
        if not args.metrics.is_file():
            raise UserError(f"{args.metrics} does not exist: give a run's metrics.json")
        try:
            record = json.loads(args.metrics.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{args.metrics} is not JSON ({err})") from None
        if append_row(args.csv, record):
            print(f"{args.metrics}: row added to {args.csv}")
        else:
            print(f"{args.metrics}: already recorded in {args.csv} (run_dir {record['run_dir']}, timestamp "
                  f"{record['timestamp']}); nothing added")

    return cli(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
