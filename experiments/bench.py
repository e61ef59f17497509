"""Shared pieces of the benchmark scripts: wall time with device synchronisation, and which code was measured."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

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
