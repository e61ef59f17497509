"""Run one experiment (or a sweep with -m): python run.py method=l1 method.ratio=0.5 model=resnet56."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from prunelab.config import expand_overrides
from prunelab.errors import UserError
from prunelab.pipeline import run
from prunelab.record import command_line


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run(cfg, run_dir, command_line(list(hydra_cfg.overrides.task)))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the sweep goes on; the job dir says why it has no record
            (run_dir / "error.txt").write_text(f"{err}\n")
            return
        sys.exit(2)


if __name__ == "__main__":
    sys.argv[1:] = expand_overrides(sys.argv[1:])
    main()
