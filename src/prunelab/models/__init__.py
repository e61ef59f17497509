"""Model zoo: CIFAR ResNets and VGG from width specs, ImageNet backbones by name.

`build_model(cfg, num_classes)` builds from a config node (conf/model/*.yaml);
`model_from_arch(arch)` rebuilds a (possibly pruned) CIFAR model from the `arch()` dict
stored in its checkpoint, so checkpoints never pickle modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from prunelab.errors import choose
from prunelab.models.cifar_resnet import CifarResNet, ResNetSpec
from prunelab.models.cifar_vgg import CifarVGG, VGGSpec
from prunelab.models.hub import build_hub, replace_head

ARCHS = ("cifar_resnet", "cifar_vgg", "hub")


def build_model(cfg: Mapping[str, Any], num_classes: int, pretrained: bool | None = None) -> nn.Module:
    """A freshly initialised model for a model config node (`pretrained=False` skips loading the hub
    weights the config asks for, e.g. to count its cost)."""
    arch = choose("model.arch", str(cfg["arch"]), list(ARCHS))
    if arch == "cifar_resnet":
        widths = [int(w) for w in cfg["widths"]]
        return CifarResNet(ResNetSpec(depth=int(cfg["depth"]), num_classes=num_classes, stem=widths[0], stages=widths))
    if arch == "cifar_vgg":
        return CifarVGG(
            VGGSpec(
                cfg=[v if v == "M" else int(v) for v in cfg["cfg"]],
                num_classes=num_classes,
                classifier_hidden=[int(w) for w in cfg["classifier_hidden"]],
                conv_bias=bool(cfg["conv_bias"]),
                final_pool=str(cfg["final_pool"]),
            )
        )
    pretrained = bool(cfg.get("pretrained", False)) if pretrained is None else pretrained
    return build_hub(str(cfg["name"]), num_classes, pretrained, str(cfg.get("source", "auto")),
                     str(cfg.get("head", "keep")))


def model_from_arch(arch: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from the dict its `arch()` method returned."""
    spec = {k: v for k, v in arch.items() if k != "arch"}
    kind = choose("checkpoint arch", str(arch["arch"]), list(ARCHS))
    if kind == "cifar_resnet":
        return CifarResNet(ResNetSpec(**spec))
    if kind == "cifar_vgg":
        return CifarVGG(VGGSpec(**spec))
    return build_hub(spec["name"], int(spec["num_classes"]), False, spec["source"], spec.get("head", "keep"))


def set_num_classes(model: nn.Module, num_classes: int) -> nn.Module:
    """`model` with a new, freshly initialised classifier of `num_classes` outputs (transfer to a target),
    its `arch()` updated so that a checkpoint rebuilds the new head."""
    replace_head(model, num_classes)
    if isinstance(model, (CifarResNet, CifarVGG)):
        model.spec.num_classes = num_classes
    else:
        model.hub_arch["num_classes"] = num_classes
    return model


__all__ = ["ARCHS", "CifarResNet", "CifarVGG", "ResNetSpec", "VGGSpec", "build_model", "model_from_arch",
           "set_num_classes"]
