"""Mirror a run to Weights & Biases (``logger=wandb``) or nowhere (``logger=none``).

W&B is a copy: metrics.json and the results CSV are the record.  Any W&B failure prints
one warning line and turns the mirror into a no-op for the rest of the job; it never stops
the run.  Each job gets its own W&B run (several jobs may share one process in a Hydra
multirun), written under the run dir; offline runs are uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from prunelab.errors import choose

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")


class Mirror:
    """A mirror that does nothing: ``logger=none``, other ranks than 0, or a failed W&B."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log `metrics` at `step` (must increase over the job, e.g. a global epoch)."""

    def summary(self, record: Mapping[str, Any]) -> None:
        """Put the run's result record into the summary."""

    def finish(self, exit_code: int = 0) -> None:
        """End the run (non-zero `exit_code` marks it failed)."""

    def __enter__(self) -> Mirror:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def _warn(action: str, exc: BaseException) -> None:
    """One warning line saying W&B is off for this job and why."""
    reason = " ".join(str(exc).split())[:200]
    log.warning(
        "W&B mirror off for this run: %s failed (%s: %s); metrics.json and the results CSV are unaffected",
        action, type(exc).__name__, reason,
    )


class WandbMirror(Mirror):
    """Forwards to one W&B run until the first error, then does nothing."""

    def __init__(self, run: Any) -> None:
        self._run = run

    def _call(self, action: str, fn: Callable[[Any], object]) -> None:
        if self._run is None:
            return
        try:
            fn(self._run)
        except Exception as exc:  # a mirror must never stop the run
            self._run = None
            _warn(action, exc)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self._call("log", lambda run: run.log(dict(metrics), step=step))

    def summary(self, record: Mapping[str, Any]) -> None:
        self._call("summary", lambda run: run.summary.update(dict(record)))

    def finish(self, exit_code: int = 0) -> None:
        self._call("finish", lambda run: run.finish(exit_code=exit_code))
        self._run = None


def open_mirror(
    logger_cfg: Mapping[str, Any],
    run_dir: str | Path,
    config: Mapping[str, Any],
    run_name: str,
    group: str | None = None,
) -> Mirror:
    """The mirror chosen by `logger_cfg` (``conf/logger/*.yaml``) for one job.

    `config` is the resolved run config; `group` is used when ``logger.group`` is null.
    A W&B run is started in `run_dir`; if that fails the no-op `Mirror` is returned.
    """
    if choose("logger", logger_cfg["name"], ["none", "wandb"]) == "none":
        return Mirror()
    mode = choose("logger.mode", logger_cfg.get("mode", "offline"), list(MODES))
    timeout = float(logger_cfg.get("timeout_s", 20))
    if mode == "online":
        log.info("W&B online: waiting at most %g s for the server (logger.timeout_s), then the run goes on without it",
                 timeout)
    try:
        import wandb

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            mode=mode,
            project=logger_cfg.get("project", "prunelab"),
            entity=logger_cfg.get("entity"),
            group=logger_cfg.get("group") or group,
            tags=list(logger_cfg.get("tags") or []),
            job_type=logger_cfg.get("job_type"),
            name=run_name,
            dir=str(run_dir),
            config=dict(config),
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", init_timeout=timeout, login_timeout=timeout),
        )
    except Exception as exc:  # import, login, network, anything: keep the run going
        _warn("init", exc)
        return Mirror()
    return WandbMirror(run)
