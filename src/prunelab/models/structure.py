"""Structure read off a forward pass: which BatchNorm normalises which conv's output.

A BN is paired with a conv when the BN's input tensor *is* the conv's output tensor in a
forward pass.  This holds for any model (torchvision, timm, ours) without relying on
module registration order, and leaves convs that feed something else unpaired.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunelab.models.features import probe


def conv_bn_pairs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """{conv name: name of the BatchNorm applied directly to its output}."""
    produced: dict[int, str] = {}
    pairs: dict[str, str] = {}
    outputs: list[torch.Tensor] = []  # keep tensors alive so ids stay unique during the pass

    def see(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            produced[id(output)] = name
            outputs.append(output)
        elif (conv := produced.get(id(inputs[0]))) is not None:
            pairs[conv] = name

    names = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, _BatchNorm))]
    probe(model, input_shape, names, see)
    return pairs
