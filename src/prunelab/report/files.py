"""Writing report outputs: all files are staged beside their targets first, then swapped in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from prunelab.errors import UserError


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


def with_block(text: str, block: str, name: str) -> str:
    """`text` (the README) with what lies between its markers `<!-- name:start -->` and `<!-- name:end -->`
    replaced by `block`; refused without both markers."""
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise UserError(f"README: expected the markers {start_marker} and {end_marker} around the generated block")
    return text[:start + len(start_marker)] + "\n" + block + text[end:]
