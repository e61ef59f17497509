"""Layer types a method leaves in a model, one file per family, and the registry that describes,
rebuilds and deploys them (registry.py).  A new layer module is imported here so that its
`@register_layer` runs before any checkpoint is rebuilt."""

from prunelab.layers.basis import BasisConv2d, BasisScalingConv, decompose
from prunelab.layers.cst import CSTConv2d
from prunelab.layers.expanded import ExpandedConv2d, ExpandedLinear
from prunelab.layers.gate import GatedBatchNorm2d
from prunelab.layers.lowrank import LowRankConv2d, factorise, to_lowrank
from prunelab.layers.registry import LAYERS, Layer, deploy, describe, rebuild, register_layer
from prunelab.layers.zero import ZeroConv2d

__all__ = ["LAYERS", "BasisConv2d", "BasisScalingConv", "CSTConv2d", "ExpandedConv2d", "ExpandedLinear", "GatedBatchNorm2d", "Layer",
           "LowRankConv2d", "ZeroConv2d",
           "decompose", "deploy", "describe", "factorise", "rebuild", "register_layer", "to_lowrank"]
