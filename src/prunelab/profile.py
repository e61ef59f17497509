"""Cost of a configuration before training it: python -m prunelab.profile model=resnet56 method=l1 method.ratio=0.5

Builds the model with random weights, applies the method's `prepare`, its stages' structural
`setup`s (without training), its `anticipate` (what training would reach, e.g. CST's uniform allocation) and `finalize` on a few random images of the dataset's shape (no
data is read or downloaded) and prints
one JSON line with the compressed model's parameters and MACs next to the dense ones.
Takes the same overrides as run.py; `--layers` also prints the per-layer table; `--latency` adds the
measured inference time of both models on the CPU (`latency`, as runs record it: deploy form, BatchNorm
folded, interleaved; `measure.latency.batch` and `min_run_time` apply), so a rate can be chosen by speed.
With a budget (`budget.macs=F`, `budget.params=F`) the knob is solved first, as a run solves it, and the methods
that meet a budget themselves (global allocation) meet it in `prepare`; the JSON line adds `budget` (the cost,
F, the knob and its value).  A structure chosen while training (basis rounds, CST's global ramp) cannot be
priced before training: the line shows the method's configured knob.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from prunelab import budget
from prunelab.config import compose_config, dataset_config
from prunelab.data.base import Dataset
from prunelab.data.in_memory import random_like
from prunelab.errors import cli
from prunelab.measure import count
from prunelab.measure.latency import configured_latency
from prunelab.methods.base import Context, Method, build_method
from prunelab.models import build_model
from prunelab.validate import validate


def compressed(cfg: DictConfig) -> tuple[nn.Module, nn.Module, Dataset, Method, Context]:
    """(dense, compressed, random data, method, context) of `cfg` with random weights and no training."""
    validate(cfg)
    data = random_like(dataset_config(cfg, cfg.dataset))
    torch.manual_seed(int(cfg.seed))
    dense = build_model(cfg.model, data.num_classes, pretrained=False)  # no downloads
    method = build_method(cfg.method)
    # a structure chosen while training meets no budget here: its anticipated allocation is priced as configured
    target = None if str(cfg.method.kind) in budget.WHILE_TRAINING else budget.target(cfg)
    ctx = Context(data, torch.device("cpu"), int(cfg.seed), cfg.trainer, dense.eval(), str(cfg.model.name),
                  budget=target)
    model = method.prepare(copy.deepcopy(dense), ctx)
    for stage in method.stages(ctx):  # no training; structural changes of later stages still apply
        model = stage.setup(model) if stage.setup is not None else model
    return dense, method.finalize(method.anticipate(model, ctx), ctx), data, method, ctx


def profile(cfg: DictConfig, layers: bool = False, latency: bool = False) -> dict[str, Any]:
    """Dense and compressed cost of `cfg` (random weights)."""
    dense, model, data, method, ctx = compressed(cfg)
    base, cost = count(dense, data.input_shape), count(model, data.input_shape)
    out: dict[str, Any] = {
        "params": cost.params, "params_no_bn": cost.params_no_bn, "macs": cost.macs,
        "base_params": base.params, "base_params_no_bn": base.params_no_bn, "base_macs": base.macs,
        "params_reduction": round(1 - cost.params / base.params, 6),
        "params_no_bn_reduction": round(1 - cost.params_no_bn / base.params_no_bn, 6),  # LRPET's convention
        "macs_reduction": round(1 - cost.macs / base.macs, 6),
        **method.profile_extra(ctx),
        **({"budget": ctx.extra["budget"]} if "budget" in ctx.extra else {}),  # met in prepare (global allocation)
    }
    if latency:
        out["latency"] = configured_latency(cfg, model, dense, tuple(data.input_shape), torch.device("cpu"))
    if layers:
        print(cost.table(), file=sys.stderr)
    return out


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip())
        return 0
    flags = {"--layers", "--latency"}
    overrides = [a for a in argv if a not in flags]

    def body() -> None:
        cfg, met = budget.apply(compose_config(overrides))  # as a run: the budget becomes the knob first
        out = profile(cfg, "--layers" in argv, "--latency" in argv)
        print(json.dumps({**out, **({"budget": met} if met else {})}))

    return cli(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
