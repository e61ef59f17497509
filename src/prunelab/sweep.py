"""Multirun bookkeeping (a Hydra callback, conf/config.yaml `hydra.callbacks`).

A job that fails, with a user error or a fault (its traceback then in `traceback.txt`), writes one
line into `error.txt` in its job folder and the sweep goes on (run.py); when the sweep ends,
`FailedJobs` lists those jobs and exits with status 2, so a sweep with failed jobs never looks like
a success.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class FailedJobs(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = sorted(Path(str(config.hydra.sweep.dir)).glob("*/error.txt"))
        if failed:
            lines = [f"  {path.parent}: {path.read_text().strip()}" for path in failed]
            print(f"error: {len(failed)} job(s) of the sweep failed:", *lines, sep="\n", file=sys.stderr)
            sys.exit(2)
