"""Structure read off a forward pass: which BatchNorm normalises which conv's output.

A BN is paired with a conv when the BN's input tensor *is* the conv's output tensor in a
forward pass.  This holds for any model (torchvision, timm, ours) without relying on
module registration order, and leaves convs that feed something else unpaired.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def conv_bn_pairs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """{conv name: name of the BatchNorm applied directly to its output}."""
    produced: dict[int, str] = {}
    pairs: dict[str, str] = {}
    outputs: list[torch.Tensor] = []  # keep tensors alive so ids stay unique during the pass

    def conv_hook(name: str):
        def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            produced[id(out)] = name
            outputs.append(out)

        return hook

    def bn_hook(name: str):
        def hook(_m: nn.Module, inp: tuple) -> None:
            conv = produced.get(id(inp[0]))
            if conv is not None:
                pairs[conv] = name

        return hook

    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook(name)))
        elif isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(bn_hook(name)))
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return pairs
