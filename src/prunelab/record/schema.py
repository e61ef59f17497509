"""The result record: one flat row per run (docs/design.md, "Result").

Written to the run dir's metrics.json, appended as one row to the results CSV and mirrored
to the W&B summary.  The column order below is the CSV header; tables read these names.

Units: accuracies are top-1 percent on the test split; reductions are fractions
``1 - compressed / dense``; MACs follow docs/design.md (conv + linear multiply-accumulates).
"""

from __future__ import annotations

RESULT_FIELDS: tuple[str, ...] = (
    # what was run
    "method",  # method label (for channel pruning: the criterion, e.g. nuclear, l1)
    "model",  # model config name, e.g. resnet56
    "dataset",  # dataset config name, e.g. cifar10
    "seed",
    "target",  # compression target as configured, e.g. "ratio=0.5" or a rate string
    # cost of the dense and the compressed model
    "base_params",
    "base_params_no_bn",
    "base_macs",
    "params",
    "params_no_bn",
    "macs",
    "params_reduction",
    "macs_reduction",
    # accuracy
    "base_acc",  # dense baseline, final epoch; or the method's unpruned reference (extra.acc_reference)
    "acc_compressed",  # right after compression, before (fine-)tuning; empty if trained from scratch
    "acc_final",  # final epoch of the method's training (the reported number)
    "acc_best",  # best epoch (secondary)
    "epochs_baseline",
    "epochs_finetune",
    "train_time_s",
    # provenance
    "device",
    "git_sha",
    "command",
    "run_dir",
    # grouping keys for tables
    "experiment",  # experiment config name, or empty
    "recipe",  # trainer recipe name of the method phase
    "data",  # what data was loaded, e.g. cifar10[50000/10000]
    "timestamp",  # ISO 8601, UTC, end of run
    "extra",  # JSON object of method-specific numbers (may be "{}")
)

INT_FIELDS = frozenset(
    {"seed", "base_params", "base_params_no_bn", "base_macs", "params", "params_no_bn", "macs",
     "epochs_baseline", "epochs_finetune"}
)
FLOAT_FIELDS = frozenset(
    {"params_reduction", "macs_reduction", "base_acc", "acc_compressed", "acc_final", "acc_best",
     "train_time_s"}
)

# results/latency/<name>.csv: runs timed after training (measure/retime.py), one row per run
LATENCY_DIR = "latency"
LATENCY_FIELDS: tuple[str, ...] = (
    "run_dir",  # the timed run, as its results row records it
    "latency",  # JSON, the form of a run's extra.latency ({"batch_<B>": {"ms", "dense_ms", "speedup"}, ...})
    "device",  # where it was timed
    "git_sha",  # of the timing pass
    "command",  # that ran the timing pass
    "timestamp",  # ISO 8601, UTC, when it was timed
)
