"""Layer types a method leaves in a model, one file per family, and the registry that describes,
rebuilds and deploys them (registry.py)."""

from prunelab.layers.lowrank import LowRankConv2d, factorise, to_lowrank
from prunelab.layers.registry import LAYERS, Layer, deploy, describe, rebuild, register_layer
from prunelab.layers.zero import ZeroConv2d

__all__ = ["LAYERS", "Layer", "LowRankConv2d", "ZeroConv2d", "deploy", "describe", "factorise", "rebuild",
           "register_layer", "to_lowrank"]
