"""Run one experiment (or a sweep with -m): python run.py method=l1 method.ratio=0.5 model=resnet56."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from prunelab.config import check_hydra_overrides, compose_config, expand_overrides
from prunelab.errors import UserError, one_line
from prunelab.pipeline import run
from prunelab.record import command_line
from prunelab.validate import validate


JOBS_STARTED = []  # set by the first job: an exit before it is Hydra's (a config or override error)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One job; in a sweep a job that fails (bad input or a fault) writes `error.txt` into its folder and the
    sweep goes on (prunelab/sweep.py lists those jobs at the end and exits with status 2)."""
    JOBS_STARTED.append(True)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        run(cfg, run_dir, command_line(list(hydra_cfg.overrides.task)))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        if not sweep:
            sys.exit(2)
        (run_dir / "error.txt").write_text(f"{err}\n")
    except KeyboardInterrupt:  # Ctrl-C: the epoch checkpoints are kept; one line instead of a traceback
        again = command_line([*(a for a in sys.argv[1:] if not a.startswith("resume=")), "resume=true"])
        print(f"interrupted: resume with the same overrides and resume=true: {again}", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # a fault, not bad input: a single run shows its traceback
        if not sweep:
            raise
        (run_dir / "traceback.txt").write_text(traceback.format_exc())
        message = f"{type(err).__name__}: {one_line(err)} (a fault, not bad input: see {run_dir / 'traceback.txt'})"
        print(f"error: {message}", file=sys.stderr)
        (run_dir / "error.txt").write_text(f"{message}\n")


def check_command_line(args: list[str]) -> None:
    """Bad input found before Hydra starts, as one line and exit 2 (Hydra prints several lines or a traceback, exits
    1, and creates the run dir first): Hydra's own output folders and launcher, and a single run's config, composed
    and checked key by key (runs with flags, -m, --cfg, ..., are composed by Hydra and checked in `run`)."""
    try:
        check_hydra_overrides(args)
        if not any(a.startswith("-") for a in args):
            validate(compose_config([a for a in args if not a.startswith(("hydra.", "hydra/"))]))
    except (UserError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv[1:] = expand_overrides(sys.argv[1:])
    check_command_line(sys.argv[1:])
    try:
        main()
    except SystemExit as done:
        if done.code == 1 and not JOBS_STARTED:  # Hydra reported bad input (it exits 1): exit 2 like every user error
            sys.exit(2)
        raise
