"""The one exception type for bad input.

A `UserError` is raised for anything the user can fix (an unknown name, a ratio out of
range, a missing dataset, a broken checkpoint).  Entry points print its message as one
line and exit with status 2; nothing is written to the results CSV.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input, reported as one line that names the key and the fix."""


def choose(kind: str, name: str, valid: "list[str] | dict") -> str:
    """Return `name` if it is one of `valid`, else raise a `UserError` listing the valid names."""
    names = sorted(valid)
    if name not in names:
        raise UserError(f"unknown {kind} '{name}': choose one of {', '.join(names)}")
    return name


def cli(body: Callable[[], object]) -> int:
    """Run an entry point's `body`: a `UserError`, or a config error of Hydra or OmegaConf (an unknown key or
    group, a bad override), becomes one line on stderr and exit status 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        body()
    except (UserError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


def one_line(err: BaseException) -> str:
    """An error's message on one line (Hydra's span several, with hints worth keeping)."""
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip())
