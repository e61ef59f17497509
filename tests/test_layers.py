"""The layer contract (layers/registry.py): exact float64 deploy forms, spec round trips, save and reload
of models with new layer types and of hub models whose widths Torch-Pruning changed."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from prunelab import layers
from prunelab.layers import (
    LAYERS, BasisConv2d, CSTConv2d, ExpandedConv2d, ExpandedLinear, GatedBatchNorm2d, LowRankConv2d, ZeroConv2d, factorise,
)
from prunelab.methods.base import Context
from prunelab.methods.channel import ChannelPruning
from prunelab.models import build_model, model_from_arch
from prunelab.train import checkpoint as ckpt

CONF = Path(__file__).resolve().parents[1] / "conf"


def resnet(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    model = build_model({"arch": "cifar_resnet", "name": "r20", "depth": 20, "widths": [4, 8, 16]}, 10)
    for m in model.modules():  # non-trivial BN statistics, so eval-mode outputs depend on every buffer
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.to(dtype).eval()


def exported(model: nn.Module) -> nn.Module:
    """Some convs factorised at a low rank, one at full rank, one turned into a zero branch."""
    return factorise(model, {"conv1": 3, "layer1.0.conv1": 4, "layer2.0.conv2": 5, "layer3.1.conv1": 0},
                     dead={"layer3.1.conv1"})


def test_every_registered_layer_is_tested_here() -> None:
    assert set(LAYERS) == {"lowrank", "zero", "basis", "gated_bn", "expanded_conv", "expanded_linear", "cst"}


def cst_layer(family: str) -> CSTConv2d:
    """A CST layer with outputs 1, 3 and 4 rebuilt from templates (training form)."""
    layer = CSTConv2d(6, 5, 3, stride=2, padding=1, bias=True, groups=2, family=family)
    layer.reassign(torch.tensor([True, False, True, False, False]))
    return layer


@pytest.mark.parametrize("layer", [
    LowRankConv2d(6, 5, 3, rank=2, stride=2, padding=1, bias=True),
    LowRankConv2d(4, 8, (3, 1), rank=3, padding="same", dilation=1),
    ZeroConv2d(5, 3, stride=2, padding=1, bias=True),
    BasisConv2d(6, 4, 3, rank=4, stride=2, padding=1, bias=True),  # a random (non-orthonormal) basis: deploy is exact anyway
    GatedBatchNorm2d(6),
    ExpandedConv2d(6, 5, 3, mid_in=12, mid_out=10, stride=2, padding=1, bias=True),
    ExpandedLinear(6, 4, mid_in=12, mid_out=8),
    cst_layer("scalar"),
    cst_layer("affine+scalar"),
])
def test_deploy_form_and_spec_round_trip_are_exact_in_float64(layer: nn.Module) -> None:
    layer = layer.double().eval()
    for p in layer.parameters():
        nn.init.normal_(p)
    for name, buffer in layer.named_buffers():
        if name.endswith(("mask",)):
            buffer[0] = 0  # one pruned unit
        elif buffer.is_floating_point() and not name.endswith("running_var"):
            buffer.normal_()
    spec = layer.spec()
    x = torch.randn(2, spec["in_features"], dtype=torch.float64) if "in_features" in spec else \
        torch.randn(2, spec.get("in_channels", spec.get("num_features", 6)), 9, 9, dtype=torch.float64)
    y = layer(x)
    deployed = layer.deploy()
    torch.testing.assert_close(deployed(x), y, rtol=1e-12, atol=1e-12)
    assert not any(isinstance(m, layers.Layer) for m in deployed.modules()) or deployed.deploy() is deployed
    rebuilt = type(layer).from_spec(layer.spec()).double().eval()
    rebuilt.load_state_dict(layer.state_dict())
    assert rebuilt.spec() == layer.spec() and torch.equal(rebuilt(x), y)


def test_a_full_rank_factorisation_is_exact_and_the_low_rank_one_is_the_truncated_svd() -> None:
    model = resnet()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    conv = copy.deepcopy(model.layer2[0].conv2)
    full = factorise(copy.deepcopy(model), {"layer2.0.conv2": 8, "conv1": 4})  # rank n = min(Cout, Cin k k)
    torch.testing.assert_close(full(x), model(x), rtol=1e-12, atol=1e-12)
    low = factorise(copy.deepcopy(model), {"layer2.0.conv2": 3}).layer2[0].conv2
    m = conv.weight.reshape(8, -1)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    torch.testing.assert_close(low.dense_weight().reshape(8, -1), u[:, :3] @ torch.diag(s[:3]) @ vh[:3],
                               rtol=1e-12, atol=1e-12)


def test_deploying_a_model_is_exact_and_idempotent() -> None:
    model = exported(resnet())
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    deployed = layers.deploy(model)
    assert torch.equal(deployed(x), model(x))
    assert isinstance(deployed.conv1, nn.Sequential) and isinstance(deployed.layer3[1].conv1, ZeroConv2d)
    again = layers.deploy(deployed)
    assert str(again) == str(deployed) and torch.equal(again(x), model(x))
    assert isinstance(model.conv1, LowRankConv2d)  # the model itself is left as it was


def test_a_model_with_new_layer_types_reloads_from_its_description(tmp_path: Path) -> None:
    model = exported(resnet(torch.float32))
    description = layers.describe(model, model_from_arch(model.arch()))
    assert set(description) == {"conv1", "layer1.0.conv1", "layer2.0.conv2", "layer3.1.conv1"}  # nothing resized
    assert description["conv1"]["type"] == "lowrank" and description["layer3.1.conv1"]["type"] == "zero"
    ckpt.save_model(tmp_path / "model.pt", model)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(ckpt.load_model(tmp_path / "model.pt").eval()(x), model(x))


def test_unknown_layer_types_are_named() -> None:
    with pytest.raises(ValueError, match="unknown layer type 'nosuch'"):
        layers.rebuild(resnet(), {"conv1": {"type": "nosuch"}})


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_a_hub_model_pruned_by_torch_pruning_saves_and_reloads(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = build_model({"arch": "hub", "name": name, "source": "torchvision", "pretrained": False}, 10).eval()
    cfg = OmegaConf.load(CONF / "method" / "l1.yaml")
    data = SimpleNamespace(input_shape=(3, 32, 32))
    pruned = ChannelPruning(cfg).prepare(model, Context(data, torch.device("cpu"), 0)).eval()
    description = layers.describe(pruned, model_from_arch(pruned.arch()))
    assert description and {d["type"] for d in description.values()} == {"resized"}
    ckpt.save_model(tmp_path / "model.pt", pruned)
    reloaded = ckpt.load_model(tmp_path / "model.pt").eval()
    x = torch.randn(2, 3, 32, 32)
    assert type(reloaded) is type(pruned) and torch.equal(reloaded(x), pruned(x))
    fresh = model_from_arch(pruned.arch())  # Torch-Pruning pruned `model` in place
    assert sum(p.numel() for p in reloaded.parameters()) < sum(p.numel() for p in fresh.parameters())
