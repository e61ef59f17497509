"""Latency measured after training, one saved run at a time:

    python -m prunelab.measure.retime RESULTS_CSV [--out results/latency/NAME.csv] [--root .]

Runs that train side by side cannot time themselves fairly (each one's timing would see the others' load), so a
study that runs them concurrently records them with `measure.latency=false` and times them here afterwards, on a
quiet machine, in one process: each run's saved model (RUN_DIR/model.pt, `--root`-relative as the row records
it) against a dense model of its architecture, exactly as a run would time itself (`configured_latency`: deploy
form, BatchNorm folded, interleaved, the run's `measure.latency` settings or their defaults, batches [1, 64] on
the CPU).  One row per run (`LATENCY_FIELDS`: the run's `run_dir`, the latency as the run's `extra.latency` would
hold it, and the command, git sha, machine and time of this pass), appended under a lock; a run already timed is
skipped, so a killed pass resumes; a file keeps one CPU thread count (a pass with another is refused).  A row
whose run folder is gone is named on one line and left untimed.  The report reads these rows where a run has no
`extra.latency` of its own (report/frame.py, `with_latency`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from prunelab.config import dataset_config
from prunelab.data.in_memory import random_like
from prunelab.errors import UserError, cli
from prunelab.evaluate import run_config
from prunelab.measure.latency import configured_latency
from prunelab.models import build_model
from prunelab.record import command_line, device_name, git_sha, read_results, utc_timestamp
from prunelab.record.files import append_csv_line, check_header, csv_line
from prunelab.record.schema import LATENCY_DIR, LATENCY_FIELDS
from prunelab.train import checkpoint as ckpt


def saved_latency(model_pt: Path) -> dict[str, Any]:
    """The run's final model (its model.pt) timed against a dense model of its architecture on the CPU, as the
    run would have recorded it in `extra.latency`."""
    payload = ckpt.load(model_pt, key="retime")
    cfg = run_config(payload, [])
    data = random_like(dataset_config(cfg, cfg.dataset))
    model = ckpt.model_from_payload(payload, model_pt, key="retime").float().eval()
    dense = build_model(cfg.model, data.num_classes, pretrained=False).eval()
    return configured_latency(cfg, model, dense, tuple(data.input_shape), torch.device("cpu"))


def timed_runs(out_csv: Path) -> dict[str, dict[str, Any]]:
    """The run dirs that `out_csv` already holds a latency row for -> that latency."""
    if not out_csv.is_file():
        return {}
    with out_csv.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return {}
        check_header(out_csv, header, LATENCY_FIELDS)
        return {cells[0]: json.loads(cells[1]) for cells in reader if len(cells) == len(LATENCY_FIELDS)}


def check_threads(out_csv: Path, done: dict[str, dict[str, Any]]) -> None:
    """One file, one CPU thread count: speed-ups timed with other counts are not comparable."""
    threads = sorted({int(t) for latency in done.values() if (t := latency.get("threads")) is not None})
    if threads and threads != [torch.get_num_threads()]:
        raise UserError(f"{out_csv}: its runs were timed with {'/'.join(map(str, threads))} CPU thread(s), this "
                        f"pass would use {torch.get_num_threads()}: set OMP_NUM_THREADS={threads[0]} (or give "
                        "another --out)")


def retime(results_csv: Path, out_csv: Path, root: Path = Path(".")) -> dict[str, list[str]]:
    """Time every run of `results_csv` that `out_csv` has no row for; {"timed", "missing", "skipped"} run dirs."""
    if not results_csv.is_file():
        raise UserError(f"{results_csv}: no such results CSV: give the CSV whose runs to time")
    done = timed_runs(out_csv)
    check_threads(out_csv, done)
    out: dict[str, list[str]] = {"timed": [], "missing": [], "skipped": []}
    provenance = {"device": device_name(torch.device("cpu")), "git_sha": git_sha(root), "command": command_line()}
    for row in read_results(results_csv):
        run_dir = str(row["run_dir"] or "")
        if not run_dir or run_dir in done:
            out["skipped"].append(run_dir)
            continue
        model_pt = root / run_dir / "model.pt"
        if not model_pt.is_file():
            print(f"retime: {model_pt} is gone: run {run_dir} stays untimed", file=sys.stderr, flush=True)
            out["missing"].append(run_dir)
            continue
        latency = saved_latency(model_pt)
        line = csv_line([run_dir, json.dumps(latency, sort_keys=True), *provenance.values(), utc_timestamp()])
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{out_csv}.lock"):
            if run_dir not in timed_runs(out_csv):
                append_csv_line(out_csv, LATENCY_FIELDS, line)
        done[run_dir] = latency
        out["timed"].append(run_dir)
        print(f"retime: {run_dir}: {summary(latency)}", flush=True)
    return out


def summary(latency: dict[str, Any]) -> str:
    """'batch 1: 1.31x, batch 64: 1.52x' (dense / compressed time)."""
    batches = sorted(int(k.removeprefix("batch_")) for k in latency if k.startswith("batch_"))
    return ", ".join(f"batch {b}: {latency[f'batch_{b}']['speedup']:.2f}x" for b in batches)


def default_out(results_csv: Path) -> Path:
    """results/runs/NAME.csv -> results/latency/NAME.csv."""
    return results_csv.parent.parent / LATENCY_DIR / results_csv.name


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m prunelab.measure.retime", description=__doc__.splitlines()[0])
    p.add_argument("results_csv", type=Path, help="the results CSV whose runs to time")
    p.add_argument("--out", type=Path, default=None, help="default: results/latency/<the CSV's name>")
    p.add_argument("--root", type=Path, default=Path("."), help="what the rows' run_dir paths are relative to")
    args = p.parse_args(argv)
    out = args.out or default_out(args.results_csv)
    return cli(lambda: print(json.dumps({k: len(v) for k, v in retime(args.results_csv, out, args.root).items()}
                                        | {"out": str(out)})))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
