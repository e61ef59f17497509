"""Parameter and MAC counting (docs/design.md, "Cost" and "Conventions").

MACs are the multiply-accumulates of Conv2d and Linear weights for one input image:
conv: H_out * W_out * C_out * (C_in / groups) * k_h * k_w; linear: (tokens) * in * out.
Bias, BatchNorm, activations, pooling and residual adds are not counted - what pruning
papers call "FLOPs".  A module may define `count_macs(inputs, output) -> int` to be counted
its own way (new layer types whose arithmetic is not a Conv2d/Linear).
Parameters are counted with and without BatchNorm (HRank-style tables include BN,
LRPET's exclude it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunelab.models.features import probe


@dataclass
class LayerCost:
    name: str
    kind: str
    macs: int
    params: int
    out_shape: tuple[int, ...]


@dataclass
class Cost:
    params: int
    params_no_bn: int
    macs: int
    per_layer: list[LayerCost] = field(default_factory=list)

    def table(self) -> str:
        """The per-layer table as aligned text."""
        rows = [f"{'layer':<40} {'kind':<14} {'out shape':<18} {'params':>12} {'MACs':>15}"]
        rows += [
            f"{c.name:<40} {c.kind:<14} {str(c.out_shape):<18} {c.params:>12,} {c.macs:>15,}" for c in self.per_layer
        ]
        rows.append(f"{'total':<40} {'':<14} {'':<18} {self.params:>12,} {self.macs:>15,}")
        return "\n".join(rows)


def _layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    if hasattr(module, "count_macs"):
        return int(module.count_macs(inputs, output))
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return output[0].numel() * per_output
    if isinstance(module, nn.Linear):
        return output[0].numel() * module.in_features
    return 0


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(all parameters, parameters outside BatchNorm layers)."""
    bn = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=False)}
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if id(p) not in bn)


def count(model: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Count parameters and per-image MACs with one forward pass on a zero image of `input_shape` (C, H, W)."""
    per_layer: list[LayerCost] = []

    def record(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        macs = _layer_macs(module, inputs, output)
        if macs or hasattr(module, "count_macs"):
            params = sum(p.numel() for p in module.parameters(recurse=not hasattr(module, "count_macs")))
            per_layer.append(LayerCost(name, type(module).__name__, macs, params, tuple(output.shape[1:])))

    counted = [
        n for n, m in model.named_modules() if hasattr(m, "count_macs") or isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    # a module with its own count_macs covers its children
    owners = [n for n in counted if hasattr(model.get_submodule(n), "count_macs")]
    counted = [n for n in counted if not any(n.startswith(o + ".") for o in owners)]
    probe(model, input_shape, counted, record)
    params, params_no_bn = param_counts(model)
    return Cost(params, params_no_bn, sum(c.macs for c in per_layer), per_layer)
