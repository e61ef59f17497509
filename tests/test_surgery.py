"""Channel surgery and the channel-pruning method: identities that must hold exactly."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from prunelab.errors import UserError
from prunelab.measure import count
from prunelab.methods.channel import ChannelPruning, parse_rates, top_k
from prunelab.models import build_model
from prunelab.models.cifar_resnet import CifarResNet
from prunelab.surgery import channel_groups, cifar, kept_count, remove_channels

SHAPE = (3, 16, 16)


def tiny_resnet(depth: int = 14) -> CifarResNet:
    torch.manual_seed(0)
    return build_model({"arch": "cifar_resnet", "depth": depth, "widths": [8, 16, 32]}, 10).double()


def tiny_vgg():
    torch.manual_seed(0)
    cfg = {"arch": "cifar_vgg", "cfg": [8, "M", 16, 16, "M", 32], "classifier_hidden": [16], "conv_bias": True,
           "final_pool": "avg"}
    return build_model(cfg, 10).double()


def randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics so copying them matters."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
            m.bias.data = torch.rand(n, generator=gen, dtype=torch.float64) - 0.2
            m.running_mean = torch.rand(n, generator=gen, dtype=torch.float64) - 0.5
            m.running_var = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5


def kill(bn: torch.nn.Module, channels: list[int]) -> None:
    """Make these channels' post-ReLU output exactly zero: gamma = 0, beta = -1."""
    bn.weight.data[channels] = 0.0
    bn.bias.data[channels] = -1.0


def logits(model: torch.nn.Module, seed: int = 2) -> torch.Tensor:
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return model.eval()(x)


def keep_all_but(groups, drop: dict[str, list[int]]):
    return {
        g.name: torch.tensor([c for c in range(g.channels) if c not in drop.get(g.name, [])])
        for g in groups if g.name in drop
    }


@pytest.mark.parametrize("build", [tiny_resnet, tiny_vgg])
def test_zero_rate_reproduces_logits_exactly(build) -> None:
    model = build()
    randomise_bn(model)
    groups = channel_groups(model, SHAPE)
    full = {g.name: torch.arange(g.channels) for g in groups}
    pruned = remove_channels(model, groups, full, SHAPE)
    assert torch.equal(logits(pruned), logits(model))


def test_resnet_inner_dead_channels_removed_exactly() -> None:
    model = tiny_resnet()
    randomise_bn(model)
    drop = {"layer1.0.conv1": [0, 3], "layer2.1.conv1": [5], "layer3.0.conv1": list(range(10))}
    for conv, channels in drop.items():
        kill(model.get_submodule(conv.replace("conv1", "bn1")), channels)
    groups = channel_groups(model, SHAPE)
    pruned = remove_channels(model, groups, keep_all_but(groups, drop), SHAPE)
    assert pruned.layer3[0].conv1.out_channels == 22
    torch.testing.assert_close(logits(pruned), logits(model), atol=1e-5, rtol=0)


def test_resnet_stage_output_and_stem_dead_channels_removed_exactly() -> None:
    """A stream channel that is zero in every block (and the stem) can go; the shortcut map keeps the sum aligned."""
    model = tiny_resnet()
    randomise_bn(model)
    stem_dead, stage1_dead, stage2_dead = [1, 6], [1, 4, 6], [0, 13, 15]  # 12..15 get no identity input
    kill(model.bn1, stem_dead + [4])
    for block in model.layer1:
        kill(block.bn2, stage1_dead)
    for block in model.layer2:
        kill(block.bn2, stage2_dead)
    # stage-2's identity path carries stage-1 channel c to c + 4; all of stage 1's dead ones must stay dead there
    for block in model.layer2:
        kill(block.bn2, [c + 4 for c in stage1_dead])
    drop = {"conv1": stem_dead, "layer1": stage1_dead, "layer2": stage2_dead}
    groups = channel_groups(model, SHAPE)
    pruned = remove_channels(model, groups, keep_all_but(groups, drop), SHAPE)
    assert (pruned.spec.stem, pruned.spec.stages) == (6, [5, 13, 32])
    assert pruned.spec.shortcut_maps  # explicit maps replaced the positional ones
    torch.testing.assert_close(logits(pruned), logits(model), atol=1e-5, rtol=0)


def test_vgg_dead_channels_removed_exactly_including_classifier_input() -> None:
    model = tiny_vgg()
    randomise_bn(model)
    kill(model.features.norm0, [2, 5])
    kill(model.features.norm3, [0, 1, 7])
    groups = channel_groups(model, SHAPE)
    assert [g.name for g in groups] == ["features.conv0", "features.conv2", "features.conv3"]  # last conv kept
    drop = {"features.conv0": [2, 5], "features.conv3": [0, 1, 7]}
    pruned = remove_channels(model, groups, keep_all_but(groups, drop), SHAPE)
    assert pruned.spec.cfg == [6, "M", 16, 13, "M", 32]
    torch.testing.assert_close(logits(pruned), logits(model), atol=1e-5, rtol=0)


def test_vgg_last_conv_feeds_the_classifier_exactly() -> None:
    model = tiny_vgg()
    randomise_bn(model)
    kill(model.features.norm5, [3, 30])
    pruned = cifar.prune(model, {"features.conv5": torch.tensor([c for c in range(32) if c not in (3, 30)])})
    assert pruned.classifier.linear1.in_features == 30
    torch.testing.assert_close(logits(pruned), logits(model), atol=1e-5, rtol=0)


def test_hrankplus_resnet56_widths_shapes_and_counts() -> None:
    rates = parse_rates("[0.]+[0.15]*2+[0.4]*27")
    assert len(rates) == 30
    model = build_model(OmegaConf.load("conf/model/resnet56.yaml"), 10)
    groups = channel_groups(model, (3, 32, 32))
    keep = {g.name: torch.arange(kept_count(g.channels, rates[g.slot])) for g in groups}
    pruned = remove_channels(model, groups, keep, (3, 32, 32))
    assert (pruned.spec.stem, pruned.spec.stages) == (16, [13, 27, 64])
    assert pruned.spec.mids == [9] * 9 + [19] * 9 + [38] * 9
    assert pruned.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    cost = count(pruned, (3, 32, 32))
    assert (cost.params, cost.macs) == (485_413, 65_168_128)


def test_independent_stage_mode_uses_positional_shortcuts() -> None:
    model = tiny_resnet()
    groups = channel_groups(model, SHAPE, mode="independent")
    stage_groups = [g for g in groups if g.kind == "stage"]
    assert len(stage_groups) == 2 * 2 and all(len(g.members) == 1 for g in stage_groups)
    keep = {g.name: torch.randperm(g.channels, generator=torch.Generator().manual_seed(i))[:5]
            for i, g in enumerate(stage_groups)}
    pruned = remove_channels(model, groups, keep, SHAPE, mode="independent")
    assert pruned.spec.shortcut_maps == {} and pruned.spec.stages == [5, 5, 32]
    assert logits(pruned).shape == (4, 10)


def test_top_k_keeps_largest_and_breaks_ties_by_index() -> None:
    scores = torch.tensor([0.5, 2.0, 0.0, 2.0, 0.0, 1.0])
    assert top_k(scores, 3).tolist() == [1, 3, 5]
    assert top_k(torch.zeros(5), 2).tolist() == [3, 4]  # high_index: the higher indices among equal scores
    assert top_k(torch.zeros(5), 2, "low_index").tolist() == [0, 1]
    assert kept_count(16, 0.4) == 9 and kept_count(16, 0.99) == 1


def test_parse_rates_errors_name_the_key() -> None:
    assert parse_rates("[0.1]+[0.2]*3") == [0.1, 0.2, 0.2, 0.2]
    assert parse_rates([0.0, 0.5]) == [0.0, 0.5]
    with pytest.raises(UserError, match="method.compress_rate"):
        parse_rates("[0.1]+0.2")
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        parse_rates("[1.0]")


def test_l1_method_keeps_largest_filters() -> None:
    model = tiny_resnet().float()
    conv = model.layer1[0].conv1
    with torch.no_grad():
        conv.weight.mul_(torch.arange(1, 9, dtype=torch.float32).view(-1, 1, 1, 1) * 100)
    cfg = OmegaConf.load("conf/method/l1.yaml")
    cfg.ratio = 0.5
    from prunelab.data.in_memory import InMemoryDataset
    from prunelab.methods.base import Context

    images = torch.zeros(2, *SHAPE, dtype=torch.uint8)
    data = InMemoryDataset("t", (images, torch.zeros(2, dtype=torch.long)), (images, torch.zeros(2, dtype=torch.long)),
                           num_classes=10, input_size=16, mean=[0, 0, 0], std=[1, 1, 1], pad=0, flip=False,
                           device=torch.device("cpu"))
    original = conv.weight.detach().clone()
    pruned = ChannelPruning(cfg).prepare(model, Context(data, torch.device("cpu"), 0))
    assert torch.equal(pruned.layer1[0].conv1.weight, original[4:])


def test_hub_resnet50_prunes_through_torch_pruning() -> None:
    torch.manual_seed(0)
    model = build_model({"arch": "hub", "name": "resnet50"}, 10).eval()
    shape = (3, 32, 32)
    groups = channel_groups(model, shape)
    assert max(g.slot for g in groups) + 1 == 20  # HRankPlus layout: 1 + 3 + 16
    rates = parse_rates("[0.1]+[0.2]*3+[0.5]*16")
    full = {g.name: torch.arange(g.channels) for g in groups}
    x = torch.randn(2, *shape)
    before = model(x)
    same = remove_channels(model, groups, full, shape)
    assert torch.equal(same(x), before)
    keep = {g.name: torch.arange(kept_count(g.channels, rates[g.slot])) for g in groups}
    pruned = remove_channels(model, groups, keep, shape)
    assert pruned.conv1.out_channels == 57 and pruned.layer1[0].conv3.out_channels == 204
    assert pruned.layer2[1].conv1.out_channels == 64 and pruned.layer4[0].conv3.out_channels == 2048
    assert pruned(x).shape == (2, 10)
