"""A fixed set of small runs whose numbers and final weights must not move when the pipeline is refactored.

Each run is one call of `prunelab.pipeline.run` on tiny settings: ResNet-20 of widths 4/8/16 on
synthetic 8x8 images with `trainer=smoke`, and on 512 images of the real CIFAR-10 subset with a
1-epoch baseline and a 1-epoch method phase.  The fixture `fixtures/unchanged.pt` holds, per run,
the record's numbers and the final `model.pt` weights, as written by the code at the commit named
in the fixture.

    python tests/unchanged_runs.py --write      # record the fixture (only when a change of numbers is intended)
    python tests/unchanged_runs.py --compare    # rerun and report the largest differences (0.0 = bit-identical)

`tests/test_unchanged.py` reruns the same configs in the test suite and compares counts exactly,
accuracies and weights to float32 tolerance.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXTURE = HERE / "fixtures" / "unchanged.pt"
SUBSET = (REPO / "../shared/data/cifar-10-subset").resolve()

TINY_RESNET = ["model=resnet20", "model.widths=[4,8,16]", "device=cpu"]
SYNTHETIC = ["dataset=synthetic", "dataset.num_train=64", "dataset.num_test=32", "dataset.image_size=8",
             "dataset.pad=1", "trainer=smoke"]
CIFAR_SUBSET = [
    "dataset=cifar10", f"dataset.root={SUBSET}", "dataset.download=false", "dataset.limit_train=512",
    "dataset.limit_test=256", "trainer@baseline.trainer=quickstart_baseline", "baseline.trainer.epochs=1",
    "trainer=quickstart_finetune", "trainer.epochs=1",
]
METHODS = {
    "dense": ["method=dense"],
    "l1": ["method=l1", "method.ratio=0.5"],
    "nuclear": ["method=nuclear", "method.compress_rate='[0.]+[0.15]*2+[0.4]*9'", "method.scoring.images=64"],
    "lrpet": ["method=lrpet"],
}
# the subset runs' method phase: one epoch of each method's own recipe where it has one
SUBSET_METHOD = {"dense": [], "l1": [], "nuclear": [], "lrpet": ["trainer.epochs=1", "trainer.batch_size=128"]}

# record keys that describe where and when a run happened, not what it computed
VOLATILE = {"train_time_s", "device", "git_sha", "command", "run_dir", "timestamp"}
VOLATILE_EXTRA = {"projection_time_s"}
COUNTS = ("base_params", "base_params_no_bn", "base_macs", "params", "params_no_bn", "macs", "epochs_baseline",
          "epochs_finetune", "seed")


def runs(subset: bool | None = None) -> dict[str, list[str]]:
    """{run name: overrides} of every run in the fixture; `subset` (default: where it exists) adds the CIFAR-10 runs."""
    out = {f"synthetic-{m}": [*TINY_RESNET, *SYNTHETIC, *o] for m, o in METHODS.items()}
    if SUBSET.is_dir() if subset is None else subset:
        out |= {f"subset-{m}": [*TINY_RESNET, *CIFAR_SUBSET, *o, *SUBSET_METHOD[m]] for m, o in METHODS.items()}
    return out


def numbers(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its volatile keys."""
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    out["extra"] = {k: v for k, v in dict(record["extra"]).items() if k not in VOLATILE_EXTRA}
    return out


def run_one(overrides: list[str], where: Path) -> dict[str, Any]:
    """Run one config under `where`; its numbers and final weights."""
    sys.path.insert(0, str(HERE))
    from conftest import compose_config

    from prunelab import pipeline
    from prunelab.train import checkpoint as ckpt

    cfg = compose_config([*overrides, f"results.csv={where}/runs.csv", f"paths.baselines={where}/baselines",
                          f"paths.checkpoints={where}/checkpoints", "measure.latency=false"])  # timings vary
    record = pipeline.run(cfg, where / "run")
    weights = ckpt.load(where / "run" / "model.pt")["model"]
    return {"numbers": numbers(record), "weights": weights}


def run_all() -> dict[str, dict[str, Any]]:
    out = {}
    for name, overrides in runs().items():
        with tempfile.TemporaryDirectory() as tmp:
            out[name] = run_one(overrides, Path(tmp))
    return out


def differences(expected: dict[str, Any], got: dict[str, Any]) -> dict[str, float]:
    """Largest absolute difference of each float number and of the weights; counts must match exactly."""
    a, b = expected["numbers"], got["numbers"]
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    for key in COUNTS:
        assert a[key] == b[key], (key, a[key], b[key])
    out = {}
    for key, value in a.items():
        if isinstance(value, float):
            out[key] = abs(value - b[key])
        elif key != "extra":
            assert value == b[key], (key, value, b[key])
    added = set(b["extra"]) - set(a["extra"])  # keys recorded since the fixture (e.g. kept_widths): new, not changed
    assert a["extra"] == {k: v for k, v in b["extra"].items() if k not in added}, (a["extra"], b["extra"])
    wa, wb = expected["weights"], got["weights"]
    assert wa.keys() == wb.keys()
    out["weights"] = max(float((wa[k].double() - wb[k].double()).abs().max()) if wa[k].numel() else 0.0 for k in wa)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="record the fixture")
    p.add_argument("--compare", action="store_true", help="rerun and print the largest differences")
    args = p.parse_args()
    got = run_all()
    if args.write:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"commit": sha, "runs": got}, FIXTURE)
        print(f"wrote {FIXTURE.relative_to(REPO)}: {len(got)} runs at {sha}")
    if args.compare:
        fixture = torch.load(FIXTURE, weights_only=True)
        worst = 0.0
        for name, expected in fixture["runs"].items():
            diff = differences(expected, got[name])
            worst = max(worst, *diff.values())
            print(name, {k: v for k, v in diff.items() if v})
        print("bit-identical" if worst == 0.0 else f"largest difference {worst:g}", f"(fixture of {fixture['commit']})")


if __name__ == "__main__":
    main()
