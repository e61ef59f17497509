"""Model zoo: golden parameter/MAC counts, the counter against FlopCounterMode, specs, hub heads."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from prunelab.errors import UserError
from prunelab.measure import count
from prunelab.models import build_model, model_from_arch
from prunelab.models.cifar_resnet import CifarResNet, ResNetSpec, positional_map

CONF = "conf/model/{}.yaml"

# (config, num_classes, input shape) -> (MACs, params incl. BN, params excl. BN); docs/design.md, "Conventions"
GOLDEN = {
    "resnet20": (40_551_040, 269_722, 268_346),
    "resnet56": (125_485_696, 853_018, 848_954),
    "resnet110": (252_887_680, 1_727_962, 1_719_866),
    "vgg16": (313_463_808, 14_991_946, 14_982_474),
}


def model(name: str, num_classes: int = 10):
    return build_model(OmegaConf.load(CONF.format(name)), num_classes)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_counts(name: str) -> None:
    cost = count(model(name), (3, 32, 32))
    assert (cost.macs, cost.params, cost.params_no_bn) == GOLDEN[name]


def test_golden_counts_torchvision_resnet50() -> None:
    net = build_model({"arch": "hub", "name": "resnet50"}, 1000)
    cost = count(net, (3, 224, 224))
    assert (cost.macs, cost.params, cost.params_no_bn) == (4_089_184_256, 25_557_032, 25_503_912)


@pytest.mark.parametrize("name", ["resnet56", "vgg16"])
def test_counter_matches_flop_counter_mode(name: str) -> None:
    net = model(name).eval()
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        net(torch.zeros(1, 3, 32, 32))
    assert flops.get_total_flops() == 2 * count(net, (3, 32, 32)).macs


def test_counter_matches_flop_counter_mode_on_grouped_and_token_layers() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4), torch.nn.Flatten(2), torch.nn.Linear(4, 5)
    )
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        net(torch.zeros(1, 8, 4, 4))
    cost = count(net, (8, 4, 4))
    assert flops.get_total_flops() == 2 * cost.macs
    assert [c.kind for c in cost.per_layer] == ["Conv2d", "Linear"]


def test_per_layer_table_sums_to_total() -> None:
    cost = count(model("resnet20"), (3, 32, 32))
    assert sum(c.macs for c in cost.per_layer) == cost.macs
    assert len(cost.per_layer) == 20 and "total" in cost.table()


def test_option_a_shortcut_pads_symmetrically() -> None:
    assert positional_map(16, 32) == [i + 8 for i in range(16)]
    assert positional_map(16, 13) == [-1, -1] + list(range(13)) + [-1]  # HRankPlus crops (13-16)//2 = -2 in front
    net = model("resnet20").eval()
    block = net.layer2[0]
    x = torch.randn(2, 16, 8, 8)
    out = torch.zeros(2, 32, 4, 4)
    padded = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(block.shortcut.add_to(out, x), padded)


def test_explicit_shortcut_map_and_arch_round_trip() -> None:
    spec = ResNetSpec(depth=8, stem=4, stages=[3, 6, 8], mids=[2, 5, 7], shortcut_maps={"1.0": [2, -1, 0, 1]})
    net = CifarResNet(spec).eval()
    x = torch.randn(1, 4, 4, 4)
    out = torch.zeros(1, 3, 4, 4)
    expected = torch.stack([x[:, 2], x[:, 3], x[:, 0]], 1)
    assert torch.equal(net.layer1[0].shortcut.add_to(out, x), expected)
    clone = model_from_arch(net.arch())
    clone.load_state_dict(net.state_dict())
    image = torch.randn(2, 3, 16, 16)
    assert torch.equal(clone.eval()(image), net(image))


def index_add_shortcut(out: torch.Tensor, x: torch.Tensor, channel_map: list[int], stride: int) -> torch.Tensor:
    """The shortcut's earlier form: scatter-add input channel i into output channel map[i]."""
    kept = [(i, j) for i, j in enumerate(channel_map) if j >= 0]
    src, dst = torch.tensor([i for i, _ in kept], dtype=torch.long), torch.tensor([j for _, j in kept], dtype=torch.long)
    return out.index_add(1, dst, x[:, :, ::stride, ::stride].index_select(1, src))


@pytest.mark.parametrize(("c_in", "c_out", "channel_map", "sliced"), [
    (16, 32, None, True), (16, 13, None, True), (13, 16, None, True), (7, 8, None, True),  # positional
    (4, 3, [2, -1, 0, 1], False), (5, 6, [5, 0, -1, 3, 1], False), (3, 5, [1, 2, 3], True),  # surgery maps
    (4, 4, [-1, -1, -1, -1], True), (4, 6, [-1, 2, 3, -1], True), (3, 3, [0, 2, 1], False),
])
def test_the_shortcut_equals_its_scatter_form_exactly(c_in: int, c_out: int, channel_map: list[int] | None,
                                                      sliced: bool) -> None:
    from prunelab.models.cifar_resnet import Shortcut

    channel_map = positional_map(c_in, c_out) if channel_map is None else channel_map
    generator = torch.Generator().manual_seed(0)
    for stride in (1, 2):
        shortcut = Shortcut(c_in, c_out, stride, channel_map)
        x = torch.randn(2, c_in, 6, 6, dtype=torch.float64, generator=generator)
        out = torch.randn(2, c_out, 6 // stride, 6 // stride, dtype=torch.float64, generator=generator)
        assert torch.equal(shortcut.add_to(out, x), index_add_shortcut(out, x, channel_map, stride))
    assert (shortcut.slice_pad is not None) == sliced  # runs of consecutive channels slice and pad; others gather


def test_bad_shortcut_map_is_rejected() -> None:
    with pytest.raises(ValueError, match="two inputs"):
        CifarResNet(ResNetSpec(depth=8, stem=2, stages=[2, 4, 4], shortcut_maps={"1.0": [0, 0]}))


def test_vgg_single_linear_variant_counts_the_same_convs() -> None:
    cfg = OmegaConf.load(CONF.format("vgg16"))
    cfg.cfg = list(cfg.cfg) + ["M"]
    cfg.classifier_hidden = []
    cost = count(build_model(cfg, 10), (3, 32, 32))
    assert cost.macs == 313_463_808 - 512 * 512  # LRPET's VGG: 313.20M (one 512x10 classifier)
    assert cost.params_no_bn == 14_719_818  # 14.72M


def test_hub_heads_and_errors() -> None:
    tv = build_model({"arch": "hub", "name": "resnet18"}, 7)
    assert tv.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    tm = build_model({"arch": "hub", "name": "resnet10t", "source": "timm"}, 5)
    assert tm.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(UserError, match="model.name 'nosuchnet'"):
        build_model({"arch": "hub", "name": "nosuchnet"}, 10)
    with pytest.raises(UserError, match="unknown model.arch"):
        build_model({"arch": "mlp"}, 10)


def test_pretrained_without_cache_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(UserError, match="model.pretrained=false"):
        build_model({"arch": "hub", "name": "resnet18", "pretrained": True}, 10)
