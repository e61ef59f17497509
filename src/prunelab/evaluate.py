"""Evaluate a saved run: python -m prunelab.evaluate RUN_DIR [key=value ...] [--split=val]

Rebuilds the final model from RUN_DIR/model.pt (or a model.pt path) without pickling modules
(its arch, layer description and weights), builds the run's dataset from the config stored in
the checkpoint, evaluates it with the run's evaluation settings and prints one JSON line: the
accuracy, the split, the data tag and, when the run dir has one, the accuracy its metrics.json
recorded.  `key=value` overrides change the stored config (e.g. `dataset.root=DIR device=cpu`);
a model.pt without a stored config takes the overrides of run.py (`dataset=cifar10 ...`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prunelab.config import compose_config
from prunelab.data import build_dataset
from prunelab.errors import UserError, cli, one_line
from prunelab.train import checkpoint as ckpt
from prunelab.train.distributed import World, pick_device
from prunelab.train.loop import evaluate
from prunelab.validate import validate

SPLITS = ("test", "val")


def model_path(target: Path) -> Path:
    """`target/model.pt` for a run dir, else `target` itself."""
    return target / "model.pt" if target.is_dir() else target


def run_config(payload: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The config stored with the model, with `overrides` applied (or run.py's config when none is stored)."""
    stored = payload.get("config")
    if stored is None:
        return compose_config(overrides)
    bad = [o for o in overrides if "=" not in o or o.startswith(("+", "~"))]
    if bad:
        raise UserError(f"override '{bad[0]}': give key=value pairs that change the run's stored config")
    cfg = OmegaConf.create(stored)
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides)) if overrides else cfg


def evaluate_saved(target: Path, overrides: list[str] = (), split: str = "test") -> dict[str, Any]:
    """Accuracy of the saved model at `target` (run dir or model.pt) on `split`, beside the recorded one."""
    path = model_path(target)
    payload = ckpt.load(path, key="model")
    cfg = run_config(payload, list(overrides))
    validate(cfg)
    recorded = recorded_accuracy(path.parent / "metrics.json", split)
    device = pick_device(str(cfg.device), World())
    data = build_dataset(cfg.dataset, device)
    model = ckpt.model_from_payload(payload, path).to(device)
    acc = evaluate(model, data, cfg.trainer, device, split=split)
    return {"acc": acc, "split": split, "data": data.tag, "recorded": recorded}


def recorded_accuracy(metrics: Path, split: str) -> float | None:
    """The accuracy on `split` that the run's `metrics.json` recorded (None without the file)."""
    if not metrics.is_file():
        return None
    try:
        record = json.loads(metrics.read_text())
        return record["acc_final"] if split == "test" else record["extra"].get("acc_val")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{metrics} is not a run record ({type(err).__name__}: {one_line(err)}): restore it, or move "
                        "it aside to evaluate the model without the recorded accuracy") from None


def main(argv: list[str]) -> int:
    return cli(lambda: print(json.dumps(evaluate_saved(*parse_args(argv)))))


def parse_args(argv: list[str]) -> tuple[Path, list[str], str]:
    """(run dir or model.pt, overrides, split) from the command line."""
    args = [a for a in argv if not a.startswith("--")]
    split = "test"
    for flag in (a for a in argv if a.startswith("--")):
        name, _, value = flag[2:].partition("=")
        if name != "split" or value not in SPLITS:
            raise UserError(f"unknown option {flag}: use --split=test or --split=val")
        split = value
    if not args:
        raise UserError("give the run dir (or its model.pt): python -m prunelab.evaluate RUN_DIR [key=value ...]")
    return Path(args[0]), args[1:], split


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
