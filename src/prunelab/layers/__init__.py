"""New layer types, and how a model that contains them is described and rebuilt.

`describe(model)` lists every new-type layer with what its structure needs (e.g. a rank);
`rebuild(model, description)` puts those layers back into a freshly built model, so a
compressed model reloads from `arch` + this description + a state dict, without pickling
modules.  A new layer type adds one entry to each.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from prunelab.layers.lowrank import LowRankConv2d, ZeroConv2d, to_lowrank


def describe(model: nn.Module) -> dict[str, dict[str, Any]]:
    """{module name: {"type": ..., structure keys}} of every new-type layer in `model`."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if isinstance(m, LowRankConv2d):
            out[name] = {"type": "lowrank", "rank": m.rank}
        elif isinstance(m, ZeroConv2d):
            out[name] = {"type": "zero"}
    return out


def rebuild(model: nn.Module, description: dict[str, dict[str, Any]]) -> nn.Module:
    """Replace the modules named in `description` by fresh layers of the described structure."""
    ranks = {name: int(d.get("rank", 0)) for name, d in description.items() if d["type"] in ("lowrank", "zero")}
    unknown = {d["type"] for d in description.values()} - {"lowrank", "zero"}
    if unknown:
        raise ValueError(f"unknown layer types in the description: {sorted(unknown)}")
    return to_lowrank(model, ranks)


__all__ = ["LowRankConv2d", "ZeroConv2d", "describe", "rebuild"]
