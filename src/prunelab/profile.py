"""Cost of a configuration before training it: python -m prunelab.profile model=resnet56 method=l1 method.ratio=0.5

Builds the model with random weights, applies the method's `prepare`, its stages' structural
`setup`s (without training) and `finalize` on a few random images of the dataset's shape (no
data is read or downloaded) and prints
one JSON line with the compressed model's parameters and MACs next to the dense ones.
Takes the same overrides as run.py; `--layers` also prints the per-layer table.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import torch
from omegaconf import DictConfig

from prunelab.config import compose_config
from prunelab.data.in_memory import InMemoryDataset
from prunelab.errors import cli
from prunelab.measure import count
from prunelab.methods.base import Context, build_method
from prunelab.models import build_model

PROFILE_IMAGES = 8


def random_data(cfg: DictConfig, n: int = PROFILE_IMAGES) -> InMemoryDataset:
    """`n` random uint8 images and labels with the dataset config's shape and classes."""
    size, classes = int(cfg.input_size), int(cfg.num_classes)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return InMemoryDataset(
        f"random-{cfg.name}", (images, labels), (images, labels), num_classes=classes, input_size=size,
        mean=list(cfg.mean), std=list(cfg.std), pad=0, flip=False, device=torch.device("cpu"),
    )


def profile(cfg: DictConfig, layers: bool = False) -> dict[str, Any]:
    """Dense and compressed cost of `cfg` (random weights)."""
    data = random_data(cfg.dataset)
    torch.manual_seed(int(cfg.seed))
    dense = build_model(cfg.model, data.num_classes)
    method = build_method(cfg.method)
    ctx = Context(data, torch.device("cpu"), int(cfg.seed), cfg.trainer, dense.eval(), str(cfg.model.name))
    model = method.prepare(copy.deepcopy(dense), ctx)
    for stage in method.stages(ctx):  # no training; structural changes of later stages still apply
        model = stage.setup(model) if stage.setup is not None else model
    model = method.finalize(model, ctx)
    base, cost = count(dense, data.input_shape), count(model, data.input_shape)
    out: dict[str, Any] = {
        "params": cost.params, "params_no_bn": cost.params_no_bn, "macs": cost.macs,
        "base_params": base.params, "base_params_no_bn": base.params_no_bn, "base_macs": base.macs,
        "params_reduction": round(1 - cost.params / base.params, 6),
        "macs_reduction": round(1 - cost.macs / base.macs, 6),
    }
    if layers:
        print(cost.table(), file=sys.stderr)
    return out


def main(argv: list[str]) -> int:
    layers = "--layers" in argv
    overrides = [a for a in argv if a != "--layers"]
    return cli(lambda: print(json.dumps(profile(compose_config(overrides), layers))))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
