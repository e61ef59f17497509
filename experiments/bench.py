"""Shared pieces of the benchmark scripts: wall time with device synchronisation, and which code was measured."""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from driver import REPO
from prunelab.record import git_sha

T = TypeVar("T")


def code_version(*sources: str) -> str:
    """HEAD's sha, or 'uncommitted (HEAD ...)' when one of `sources` (repository paths) differs from it."""
    sha = git_sha(REPO)
    changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", *sources],
                             capture_output=True, text=True, check=False).stdout.strip()
    return f"uncommitted (HEAD {sha})" if changed else sha


def timed(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """(wall seconds, result) of one call of `fn`, with queued GPU work finished before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, out


def add_machine_args(p: argparse.ArgumentParser) -> None:
    """--threads (torch CPU threads) and --out (where results/bench files go), shared by the benchmarks."""
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench")


def set_threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def footer(record: Mapping[str, Any]) -> str:
    """The provenance lines closing every benchmark's markdown: device, threads, torch, command, git, time."""
    return (f"Device: {record['device']}; torch threads: {record['threads']}; torch {record['torch']}.  \n"
            f"Command: `{record['command']}`  \nGit: {record['git_sha']}  \nTime: {record['timestamp']}\n")
