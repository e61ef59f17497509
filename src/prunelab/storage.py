"""Where a run writes: folders checked before anything runs, and a write that fails (a read-only folder,
a full disk) reported as one line naming the path, the config key that chose it and the fix.

`places` maps a config key (or a command-line option) to the folder or file it names, e.g.
``{"paths.checkpoints": Path("cache/runs"), "results.csv": Path("results/runs.csv")}``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from prunelab.errors import UserError

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def check_writable(path: Path, key: str) -> None:
    """A `UserError` naming `key` unless files can be created in the folder `path` (or, when it does not exist
    yet, in the nearest existing folder above it, where it will be made)."""
    folder = next(p for p in (path, *path.parents) if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{key}={path}: {folder} is not a writable folder: make it writable or set {key} to "
                        "another folder")


def write_error(err: OSError, places: Mapping[str, Path], then: str = "") -> UserError | None:
    """The one line for `err` when it is a failed write, else None: no space left anywhere, or no permission
    (or a read-only file system) inside one of `places` (elsewhere, e.g. a dataset folder, it is not a write).

    Names the file, the key of `places` whose folder holds it (the closest) and the fix; `then` is appended
    (what to do after fixing it)."""
    path = Path(err.filename) if isinstance(err.filename, (str, os.PathLike)) else None
    held = [(key, place) for key, place in places.items() if path is not None and _within(path, place)]
    key, place = max(held, key=lambda kp: len(kp[1].parts)) if held else (None, None)
    if err.errno in NO_SPACE:
        where = f"set {key} to a folder on another disk" if key else "write to another disk"
        return UserError(f"cannot write {path or 'a file'} ({err.strerror}): free space on its disk or {where}{then}")
    if err.errno in NOT_WRITABLE and key is not None:
        return UserError(f"cannot write {path} ({err.strerror}): make {place} writable or set {key} to a folder "
                         f"you can write to{then}")
    return None


@contextmanager
def failed_writes(places: Mapping[str, Path], then: str = "") -> Iterator[None]:
    """Turn a failed write inside the block into its one-line `UserError` (`write_error`); other errors pass."""
    try:
        yield
    except OSError as err:
        user_error = write_error(err, places, then)
        if user_error is None:
            raise
        raise user_error from None


def _within(path: Path, place: Path) -> bool:
    path, place = Path(os.path.abspath(path)), Path(os.path.abspath(place))
    return path == place or place in path.parents
