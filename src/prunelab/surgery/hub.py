"""Channel removal on torchvision / timm backbones through Torch-Pruning's dependency graph.

Torch-Pruning traces the model and groups every conv output channel with all the layers
that must shrink with it (BatchNorms, the consumers' input channels, every conv writing
into the same residual sum).  We list those groups, score them with our criteria and ask
Torch-Pruning to remove the channels we do not keep.

Slots (the per-layer rate list): for torchvision bottleneck ResNets we follow HRankPlus's
ResNet-50 layout, `[stem] + [stage 1..3 outputs] + [one rate per block for its conv1 and
conv2]` (20 entries for ResNet-50).  For other backbones each group is a slot of its own,
in the order its first conv appears in the model.  Groups that feed the classifier are
never pruned.  Activation scores are read at each conv's BatchNorm output followed by a
ReLU, i.e. before residual adds (torchvision reuses one ReLU module per block, so the
post-add map has no module of its own) - a documented departure from HRankPlus's hooks.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from prunelab.models.features import eval_mode, zero_input
from prunelab.models.hub import classifier_of
from prunelab.models.structure import conv_bn_pairs
from prunelab.surgery.groups import ChannelGroup, Member


def _graph(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    with eval_mode(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=zero_input(model, input_shape))


def groups(model: nn.Module, input_shape: tuple[int, ...]) -> list[ChannelGroup]:
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    head = classifier_of(model)
    bn_of = conv_bn_pairs(model, input_shape)
    found = []
    for group in _graph(model, input_shape).get_all_groups(ignored_layers=[head], root_module_types=[nn.Conv2d]):
        targets = [(dep.handler, dep.target.module) for dep, _ in group]
        if any(module is head for _, module in targets):
            continue  # the stream the classifier reads
        producers = sorted({names[m] for h, m in targets if h == tp.prune_conv_out_channels}, key=order.get)
        members = [Member(c, bn_of.get(c, c), relu=True) for c in producers]
        found.append((producers, members, len(group[0].idxs)))
    found.sort(key=lambda item: order[item[0][0]])
    bottleneck = _bottleneck_resnet(model)
    out = []
    for i, (producers, members, channels) in enumerate(found):
        kind = "stage" if len(producers) > 1 else ("stem" if i == 0 else "inner")
        slot = bottleneck.get(producers[-1] if kind == "stage" else producers[0], i) if bottleneck else i
        out.append(ChannelGroup(producers[0], members, channels, slot, kind, handle=producers[0]))
    return out


def _bottleneck_resnet(model: nn.Module) -> dict[str, int]:
    """HRankPlus slots {conv name: slot} for a torchvision-style bottleneck ResNet, else {}."""
    stages = [getattr(model, f"layer{s}", None) for s in (1, 2, 3, 4)]
    if any(s is None for s in stages) or not all(hasattr(b, "conv3") for s in stages for b in s):
        return {}
    slots = {"conv1": 0}
    block = 0
    for s, stage in enumerate(stages, start=1):
        for b in range(len(stage)):
            if s < 4:  # a stream group is keyed by its last writer; layer4's feeds the classifier
                slots[f"layer{s}.{b}.conv3"] = s
            slots[f"layer{s}.{b}.conv1"] = slots[f"layer{s}.{b}.conv2"] = 4 + block
            block += 1
    return slots


def prune(model: nn.Module, input_shape: tuple[int, ...], keep: dict[str, torch.Tensor]) -> nn.Module:
    """Remove, in place, every channel of each group (named by its first conv) not in `keep`."""
    graph = _graph(model, input_shape)
    for name, kept in keep.items():
        conv = model.get_submodule(name)
        remove = sorted(set(range(conv.out_channels)) - set(kept.tolist()))
        if remove:
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=remove)
            group.prune()
    return model
