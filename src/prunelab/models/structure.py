"""Structure read off a forward pass: which BatchNorm normalises which conv's output.

A BN is paired with a conv when the BN's input tensor *is* the conv's output tensor in a
forward pass.  This holds for any model (torchvision, timm, ours) without relying on
module registration order, and leaves convs that feed something else unpaired.

`sole_conv_bn_pairs` keeps the pairs whose BN is the only reader of the conv's output (what folding a BN
into its conv needs): it follows the autograd graph of one forward pass, which records every operation
that reads a tensor, whatever module or function performs it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_leaves

from prunelab.models.features import FeatureTap, eval_mode, probe, zero_input


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


def sole_conv_bn_pairs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """{conv name: BatchNorm name} where, in one eval-mode forward pass, each of the two modules runs once, the
    BN reads the conv's output unchanged and the BN's output is the only thing computed from that output
    (`y = conv(x); bn(y) + y` is left out).  A model whose forward records no autograd graph gives no pairs."""
    names = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, _BatchNorm))]
    calls: Counter[str] = Counter()
    made: dict[str, torch.autograd.graph.Node] = {}  # conv -> the graph node of its output
    read: dict[str, tuple] = {}  # BN -> the graph nodes of its input and of its output

    def see(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        calls[name] += 1
        if isinstance(module, nn.Conv2d):
            made[name] = output.grad_fn
        else:
            read[name] = (inputs[0].grad_fn, output.grad_fn)

    with FeatureTap(model, names, see), eval_mode(model), torch.enable_grad():
        outputs = model(zero_input(model, input_shape).requires_grad_())
        readers = _readers(t.grad_fn for t in tree_leaves(outputs) if isinstance(t, torch.Tensor))
    conv_of = {node: conv for conv, node in made.items() if node is not None and calls[conv] == 1}
    return {conv_of[node]: bn for bn, (node, out) in read.items()
            if node in conv_of and calls[bn] == 1 and readers.get(node) == [out]}


def _readers(roots: Iterable[torch.autograd.graph.Node | None]) -> dict[torch.autograd.graph.Node, list]:
    """{autograd node: the nodes that read its output}, over the graph reachable from `roots` (what the outputs
    depend on)."""
    readers: dict = {}
    seen, todo = set(), [r for r in roots if r is not None]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None:
                readers.setdefault(child, []).append(node)
                todo.append(child)
    return readers
