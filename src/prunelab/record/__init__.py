"""The run record (docs/design.md, "Result"): metrics.json, the results CSV, history.csv, W&B.

The files on disk are the record; W&B is a mirror of them.
"""

from prunelab.record.files import write_json_atomic
from prunelab.record.history import HistoryWriter
from prunelab.record.provenance import command_line, device_name, git_sha, utc_timestamp
from prunelab.record.results import DEFAULT_RESULTS_CSV, append_row, check_appendable, holds_run, read_results
from prunelab.record.schema import FLOAT_FIELDS, INT_FIELDS, RESULT_FIELDS
from prunelab.record.wandb_mirror import Mirror, open_mirror

__all__ = [
    "DEFAULT_RESULTS_CSV",
    "FLOAT_FIELDS",
    "INT_FIELDS",
    "RESULT_FIELDS",
    "HistoryWriter",
    "Mirror",
    "append_row",
    "check_appendable",
    "command_line",
    "device_name",
    "git_sha",
    "holds_run",
    "open_mirror",
    "read_results",
    "utc_timestamp",
    "write_json_atomic",
]
