"""Writing report outputs: all files are staged beside their targets first, then swapped in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def write_outputs(outputs: Mapping[str, bytes], out_dir: Path) -> list[Path]:
    """Write `outputs` (paths relative to `out_dir` -> content); return the written paths, sorted.

    Every file is written to a temporary name first; only when all are staged does each
    replace its target (an atomic rename), so a failure leaves the old outputs untouched.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for relative, data in sorted(outputs.items()):
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            staged.append((temporary, target))
            temporary.write_bytes(data)
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, target in staged:
        os.replace(temporary, target)
    return [target for _, target in staged]
