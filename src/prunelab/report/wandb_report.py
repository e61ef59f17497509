"""`python -m prunelab.report --wandb`: every table as a `wandb.Table` and every plot as an image, in one W&B run
per experiment group (offline by default, like runs: `wandb sync <dir>/wandb/offline-run-*` uploads them).

A table's group is the experiment its `where` selects (its first one), else the table's name; its W&B key is
`table/<table>`, with the same cells, headers and rows as its markdown (`display_frame`, wide); each plot of the
table is logged under `plot/<file stem>`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from prunelab.report.spec import TableSpec


def group_of(spec: TableSpec) -> str:
    """The experiment group a table belongs to in W&B."""
    experiments = spec.where.get("experiment", ())
    return str(experiments[0]) if experiments else spec.name


def log_tables(tables: Mapping[str, tuple[TableSpec, pd.DataFrame]], plots: Mapping[str, bytes], where: Path,
               mode: str = "offline", project: str = "prunelab") -> list[str]:
    """Log `tables` ({name: (spec, display frame)}) and their `plots` ({file stem: PNG}) into one W&B run per
    group under `where`; the groups' names."""
    import wandb
    from PIL import Image

    groups: dict[str, list[str]] = {}
    for name, (spec, _) in sorted(tables.items()):
        groups.setdefault(group_of(spec), []).append(name)
    where.mkdir(parents=True, exist_ok=True)
    for group, names in sorted(groups.items()):
        run = wandb.init(mode=mode, project=project, group=group, job_type="report", name=f"report-{group}",
                         dir=str(where), reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        try:
            for name in names:
                frame = tables[name][1]
                run.log({f"table/{name}": wandb.Table(columns=list(frame.columns), data=frame.values.tolist())})
                for stem in sorted(s for s in plots if s.startswith(f"{name}-")):
                    run.log({f"plot/{stem}": wandb.Image(Image.open(io.BytesIO(plots[stem])))})
        finally:
            run.finish()
    return sorted(groups)
