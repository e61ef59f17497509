"""Channel groups: the unit of structured pruning.

A `ChannelGroup` is a set of output channels that must be kept or removed together:
one conv's filters (a block's inner conv, a VGG conv), or the channels of a residual
stream that several convs write into (a ResNet stage output).  Each member conv says
where its feature map is read for activation-based scores (`feature`: the module whose
output is the post-BN-ReLU map; for a ResNet block's second conv that is the ReLU after
the residual add, `pre_add` the BN before it; for a VGG conv followed by a max-pool, `pooled`
names the pool, whose output HRankPlus scores).  Backbones whose ReLU modules are shared
(torchvision) are read at the conv's BatchNorm with `relu=True`.

`slot` is the group's index in the model's per-layer rate list (HRankPlus's
compress_rate layout); several groups may share a slot (a ResNet-50 block's two inner
convs take one rate).  `kind` says which groups a uniform ratio prunes: "inner" always,
"stem" and "stage" only with `stage_outputs=true`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Member:
    conv: str  # conv module producing these channels
    feature: str  # module whose output is the post-activation map scored for this conv
    pre_add: str | None = None  # module giving the map before a residual add (ResNet conv2's BN)
    pooled: str | None = None  # the max-pool right after `feature` (a VGG conv before a pool), HRankPlus's read point
    relu: bool = False  # apply ReLU to `feature`'s output (when the hooked module is the BN itself)


@dataclass
class ChannelGroup:
    name: str
    members: list[Member]
    channels: int
    slot: int
    kind: str  # "stem" | "stage" | "inner"
    handle: object = field(default=None, repr=False, compare=False)  # backend data (e.g. a Torch-Pruning group)


def kept_count(channels: int, rate: float, round_to: int = 1) -> int:
    """HRankPlus's width rule: int(C * (1 - r)), but at least one channel; with `round_to` N > 1 the kept width
    is rounded up to a multiple of N (Torch-Pruning's `round_to`: hardware-friendly widths), at most C."""
    kept = max(1, int(channels * (1.0 - rate)))
    return min(channels, -(-kept // round_to) * round_to) if round_to > 1 else kept
