"""Where a number came from: code version, command, device and time of a run."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch


def _git(repo_dir: Path, *args: str) -> str:
    """Output of a read-only git command in `repo_dir` (raises if git fails)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # parallel jobs must not fight over the index lock
    done = subprocess.run(
        ["git", "-C", str(repo_dir), *args],
        capture_output=True, text=True, check=True, timeout=30, env=env,
    )
    return done.stdout.strip()


def git_sha(repo_dir: str | os.PathLike[str]) -> str:
    """Full sha of HEAD, with ``+dirty`` when tracked code or configs have uncommitted changes.

    Files under ``results/`` are outputs, not code: rewriting them (as every experiment
    does) leaves the sha clean; so does prose (``docs/``, Markdown files), which cannot
    change a number.  "unknown" outside a git repository, before the first commit, or
    without git.
    """
    try:
        sha = _git(Path(repo_dir), "rev-parse", "--verify", "HEAD")
        dirty = _git(Path(repo_dir), "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                     ":(top,exclude)results", ":(top,exclude)docs", ":(top,exclude,glob)**/*.md")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def command_line(overrides: Sequence[str] | None = None) -> str:
    """The command that started this process, shell-quoted (``python run.py ...``).

    Under torchrun the launcher is shown with its process count.  With `overrides` (a Hydra
    job's own overrides), the command reruns just that job, which is what each job of a
    multirun should record.
    """
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env:
        nodes = int(env["WORLD_SIZE"]) // int(env["LOCAL_WORLD_SIZE"])
        launcher = ["torchrun", f"--nproc-per-node={env['LOCAL_WORLD_SIZE']}"]
        launcher += [f"--nnodes={nodes}"] if nodes > 1 else []
    else:
        launcher = ["python"]
    args = sys.argv[1:] if overrides is None else list(overrides)
    return shlex.join([*launcher, sys.argv[0], *args])


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_name(device: torch.device | str, world_size: int = 1) -> str:
    """A short description such as ``cuda: NVIDIA H100 80GB HBM3`` or ``cpu: <model> (2 cores)``.

    `world_size` > 1 (data-parallel processes) is shown as a count: ``cuda: 4x NVIDIA ...``.
    """
    device = torch.device(device)
    count = f"{world_size}x " if world_size > 1 else ""
    if device.type == "cuda":
        return f"cuda: {count}{torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"cpu: {count}{_cpu_model()} ({cores} cores)"
    return f"{device.type}: {count}{platform.machine()}"


def utc_timestamp() -> str:
    """Now, as ISO 8601 in UTC to the second, e.g. ``2025-01-31T12:00:00+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
