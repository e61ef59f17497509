"""Energy-aware pruning: the nuclear-norm score and its comparison criteria, the paper's rates, the toy
experiment and the stability analysis (docs/papers/energy_aware.md §7; surgery identities are in test_surgery.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from prunelab import pipeline
from prunelab.data.in_memory import InMemoryDataset
from prunelab.methods.base import Context
from prunelab.methods.channel import ChannelPruning, parse_rates, top_k
from prunelab.methods.criteria import CRITERIA, matrix_ranks, nuclear_norms
from prunelab.methods.energy_aware import agreement, image_range, jaccard, prefix_scores, scored_members, with_noise
from prunelab.methods.energy_aware_toy import (
    TOY_CRITERIA, ToyMLP, accuracy, decision_grid, prune_globally, reference_points, toy_data, train_toy, unit_scores,
)
from prunelab.models import build_model
from prunelab.models.cifar_resnet import CifarResNet
from prunelab.profile import profile
from prunelab.surgery import channel_groups

from conftest import compose_config

SHAPE = (3, 8, 8)
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids oversubscribing a shared CPU (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_resnet(depth: int = 8) -> CifarResNet:
    torch.manual_seed(0)
    model = build_model({"arch": "cifar_resnet", "depth": depth, "widths": [4, 8, 16]}, 10).double().eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial BN so maps are not just normalised convs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=gen, dtype=F64) + 0.5
            m.bias.data = torch.rand(m.num_features, generator=gen, dtype=F64) - 0.3
            m.running_mean = torch.rand(m.num_features, generator=gen, dtype=F64) - 0.5
            m.running_var = torch.rand(m.num_features, generator=gen, dtype=F64) + 0.5
    return model


def batches(n: int = 6, split: int = 6, seed: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, *SHAPE, generator=gen, dtype=F64), torch.randint(0, 10, (n,), generator=gen)
    return list(zip(x.split(split), y.split(split), strict=True))


def members(model: CifarResNet, pre_add: bool = False):
    groups = channel_groups(model, SHAPE)
    return scored_members(groups, [1.0] * (max(g.slot for g in groups) + 1), pre_add)


# ---------------------------------------------------------------- the score on single maps


def test_nuclear_norm_of_rank_one_map_is_product_of_norms() -> None:
    u, v = torch.tensor([1.0, 2.0, 2.0], dtype=F64), torch.tensor([3.0, 4.0], dtype=F64)
    a = torch.outer(u, v)
    assert nuclear_norms(a).item() == pytest.approx(15.0, abs=1e-12)  # |u| |v| = 3 * 5
    assert matrix_ranks(a).item() == 1


def test_diagonal_and_zero_maps() -> None:
    d = torch.diag(torch.tensor([3.0, 1.0, 0.0], dtype=F64))
    assert nuclear_norms(d).item() == pytest.approx(4.0, abs=1e-12) and matrix_ranks(d).item() == 2
    maps = torch.stack([d, torch.zeros(3, 3, dtype=F64), 0.5 * d])
    scores = nuclear_norms(maps)
    assert scores.tolist() == pytest.approx([4.0, 0.0, 2.0], abs=1e-12)
    assert top_k(scores, 2).tolist() == [0, 2]  # the zero map is pruned first


def test_nuclear_norm_is_homogeneous_and_orders_differently_from_rank() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=gen, dtype=F64) * 0.01  # full rank, small
    b = torch.outer(torch.randn(5, generator=gen, dtype=F64), torch.randn(5, generator=gen, dtype=F64))  # rank 1
    for c in (10.0, -3.0, 0.5):
        assert nuclear_norms(c * a).item() == pytest.approx(abs(c) * nuclear_norms(a).item(), rel=1e-12)
        assert matrix_ranks(c * a).item() == matrix_ranks(a).item() == 5
    pair = torch.stack([a, 10 * b])
    assert top_k(nuclear_norms(pair), 1).tolist() == [1] and top_k(matrix_ranks(pair), 1).tolist() == [0]


def test_norm_sandwich_on_random_maps() -> None:
    gen = torch.Generator().manual_seed(3)
    low_rank = torch.randn(50, 9, 2, generator=gen, dtype=F64) @ torch.randn(50, 2, 7, generator=gen, dtype=F64)
    maps = torch.cat([torch.relu(torch.randn(50, 9, 7, generator=gen, dtype=F64)), low_rank])
    spectral, frobenius = torch.linalg.matrix_norm(maps, ord=2), torch.linalg.matrix_norm(maps)
    nuclear, rank = nuclear_norms(maps), matrix_ranks(maps)
    assert set(rank[50:].tolist()) == {2.0}
    tol = 1e-12
    assert (spectral <= frobenius + tol).all() and (frobenius <= nuclear + tol).all()
    assert (nuclear <= rank.sqrt() * frobenius + tol).all()


# ---------------------------------------------------------------- criteria on a network


def looped_nuclear(model: CifarResNet, member, data) -> torch.Tensor:
    """One map at a time, as HRank's hook does."""
    maps = []
    handle = model.get_submodule(member.feature).register_forward_hook(lambda _m, _i, out: maps.append(out))
    with torch.no_grad():
        for x, _ in data:
            model(x)
    handle.remove()
    values = [[torch.linalg.matrix_norm(m[i, c], ord="nuc").item() for c in range(m.shape[1])]
              for m in maps for i in range(m.shape[0])]
    return torch.tensor(values, dtype=F64).mean(0)


def test_batched_scores_equal_looped_and_ignore_the_batch_split() -> None:
    model = tiny_resnet()
    layers = members(model)
    whole = CRITERIA["nuclear"](model, layers, batches(6, 6), 0)
    for member in layers:
        assert whole[member.conv].shape == (model.get_submodule(member.conv).out_channels,)
        torch.testing.assert_close(whole[member.conv].double(), looped_nuclear(model, member, batches(6, 6)),
                                   atol=1e-4, rtol=1e-6)
    for name in ("nuclear", "hrank", "taylor"):
        a = CRITERIA[name](model, layers, batches(6, 6), 0)
        b = CRITERIA[name](model, layers, batches(6, 2), 0)
        for conv in a:
            torch.testing.assert_close(a[conv], b[conv], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("per_map", [nuclear_norms, matrix_ranks])
def test_splitting_maps_over_cpu_threads_changes_no_value(per_map) -> None:
    maps = torch.relu(torch.randn(3, 7, 9, 8, generator=torch.Generator().manual_seed(0)))
    maps[1, 2] = 0  # a dead map is skipped, not decomposed
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = per_map(maps)
        torch.set_num_threads(4)
        split = per_map(maps)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(alone, split) and alone[1, 2] == 0 and alone.shape == (3, 7)


def test_hrank_scores_are_mean_matrix_ranks() -> None:
    model = tiny_resnet()
    layer = [m for m in members(model) if m.conv == "layer2.0.conv1"]
    maps = []
    handle = model.get_submodule(layer[0].feature).register_forward_hook(lambda _m, _i, out: maps.append(out))
    scores = CRITERIA["hrank"](model, layer, batches(), 0)["layer2.0.conv1"]
    handle.remove()
    expected = torch.linalg.matrix_rank(maps[0].float()).double().mean(0)
    torch.testing.assert_close(scores.double(), expected)


def block_maps(model: CifarResNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """layer1.0's maps computed by hand: (after bn2, before the add; after the add and the ReLU)."""
    with torch.no_grad():
        stem = torch.relu(model.bn1(model.conv1(x)))
        block = model.layer1[0]
        pre = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(stem)))))
        return pre, torch.relu(block.shortcut.add_to(pre, stem))


def test_second_conv_is_scored_after_the_residual_add_and_pre_add_before_it() -> None:
    model = tiny_resnet()
    data = batches()
    pre, post = block_maps(model, data[0][0])
    assert not torch.allclose(pre, post)
    post_add = CRITERIA["nuclear"](model, members(model), data, 0)["layer1.0.conv2"]
    pre_add = CRITERIA["nuclear"](model, members(model, pre_add=True), data, 0)["layer1.0.conv2"]
    torch.testing.assert_close(post_add.double(), nuclear_norms(post).mean(0), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(pre_add.double(), nuclear_norms(pre).mean(0), atol=1e-6, rtol=1e-6)


def test_taylor_is_the_per_image_first_order_term() -> None:
    """|mean_hw A dl_n/dA| per image, averaged; checked image by image with autograd."""
    model = tiny_resnet()
    (x, y), = batches(4, 4)
    layer = [m for m in members(model) if m.conv == "layer1.0.conv2"]
    scores = CRITERIA["taylor"](model, layer, [(x, y)], 0)["layer1.0.conv2"]
    expected = []
    for n in range(len(y)):
        captured = []
        handle = model.layer1[0].relu2.register_forward_hook(lambda _m, _i, out: captured.append(out))
        loss = torch.nn.functional.cross_entropy(model(x[n : n + 1]), y[n : n + 1])
        handle.remove()
        (grad,) = torch.autograd.grad(loss, captured)
        expected.append((captured[0] * grad).mean((2, 3)).abs()[0].detach())
    torch.testing.assert_close(scores.double(), torch.stack(expected).mean(0), atol=1e-6, rtol=1e-5)


def test_dead_channels_score_zero_and_nuclear_pruning_removes_them_exactly() -> None:
    model = tiny_resnet(depth=14).float()  # scored on the loader's float32 images
    bn = model.layer2[1].bn1
    bn.weight.data[[1, 5, 6, 7]] = 0.0
    bn.bias.data[[1, 5, 6, 7]] = -1.0  # post-ReLU maps are exactly zero
    images = (torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    labels = torch.zeros(8, dtype=torch.long)
    data = InMemoryDataset("t", (images, labels), (images, labels), num_classes=10, input_size=8,
                           mean=[0.5] * 3, std=[0.25] * 3, pad=0, flip=False, device=torch.device("cpu"))
    cfg = compose_config(["method=nuclear"]).method
    rates = [0.0] * 9
    rates[3 + 3] = 0.5  # block 3 (layer2.1): inner conv 8 -> 4 channels, the live ones
    cfg.compress_rate, cfg.scoring.images, cfg.scoring.augment = rates, 8, False
    x = next(iter(data.loader("test", 8, train=False)))[0]
    before = model(x)
    pruned = ChannelPruning(cfg).prepare(model, Context(data, torch.device("cpu"), 0))
    assert pruned.layer2[1].conv1.out_channels == 4
    torch.testing.assert_close(pruned.eval()(x), before, atol=1e-5, rtol=0)
    scores = CRITERIA["nuclear"](model, members(model), [(x, labels)], 0)["layer2.1.conv1"]
    assert scores[[1, 5, 6, 7]].abs().max() == 0 and scores[[0, 2, 3, 4]].min() > 0


# ---------------------------------------------------------------- the paper's rates and configs


@pytest.mark.parametrize(
    ("overrides", "macs", "params", "macs_red", "params_red"),
    [
        (["model=resnet56"], 74_817_856, 461_680, 40.4, 45.9),  # the paper's reductions (candidate rates)
        (["model=resnet110"], 126_978_688, 813_742, 49.8, 52.9),
        (["model=resnet110", "rate_set=hrankplus"], 139_006_144, 1_045_951, 45.0, 39.5),
        (["model=vgg16", "rate_set=hrankplus"], 130_566_528, 2_766_541, 58.3, 81.5),
    ],
)
def test_profile_of_the_cifar10_experiment_gives_the_printed_reductions(
    overrides: list[str], macs: int, params: int, macs_red: float, params_red: float
) -> None:
    out = profile(compose_config(["experiment=energy_aware_cifar10", *overrides]))
    assert (out["macs"], out["params"]) == (macs, params)
    assert round(100 * out["macs_reduction"], 1) == macs_red and round(100 * out["params_reduction"], 1) == params_red


def test_every_energy_aware_config_composes_with_its_rate_layout() -> None:
    cifar = compose_config(["experiment=energy_aware_cifar10"])
    assert cifar.experiment_name == "energy_aware_cifar10" and cifar.method.criterion == "nuclear"
    assert len(parse_rates(cifar.method.compress_rate)) == 30
    assert len(parse_rates(compose_config(["experiment=energy_aware_cifar10", "model=resnet110"]).method.compress_rate)) == 57
    imagenet = compose_config(["experiment=energy_aware_imagenet"])
    assert (imagenet.model.name, imagenet.dataset.name, imagenet.trainer.name) == ("resnet50", "imagenet", "hrankplus_imagenet")
    assert len(parse_rates(imagenet.method.compress_rate)) == 20 and imagenet.baseline.trainer.epochs == 0
    for name in ("nuclear", "hrank", "taylor"):
        cfg = compose_config([f"method={name}"])
        assert cfg.method.name == cfg.method.criterion == name and cfg.method.kind == "channel"
    assert compose_config(["trainer=long_cosine"]).trainer.epochs == 400


# ---------------------------------------------------------------- stability analysis


def test_prefix_scores_equal_direct_scores_of_the_first_images() -> None:
    model = tiny_resnet()
    layers = members(model)
    data = batches(8, 3)
    by_size = prefix_scores(model, "nuclear", layers, data, [1, 4, 8])
    for n in (1, 4, 8):
        direct = CRITERIA["nuclear"](model, layers, image_range(data, 0, n), 0)
        for conv in direct:
            torch.testing.assert_close(by_size[n][conv], direct[conv], atol=1e-5, rtol=1e-5)
    assert sum(len(y) for _, y in image_range(data, 2, 7)) == 5


def test_agreement_rows_and_noise() -> None:
    model = tiny_resnet()
    groups = channel_groups(model, SHAPE)
    rates = [0.5] * (max(g.slot for g in groups) + 1)
    layers = scored_members(groups, rates)
    data = batches()
    reference = CRITERIA["nuclear"](model, layers, data, 0)
    same = agreement(reference, reference, groups, rates)
    assert {r["metric"] for r in same} == {"spearman", "kendall", "jaccard"}
    assert all(r["value"] == pytest.approx(1.0) for r in same)
    noisy = CRITERIA["nuclear"](model, layers, with_noise(data, 1.0, 0), 0)
    assert min(r["value"] for r in agreement(noisy, reference, groups, rates)) < 1.0
    assert torch.equal(with_noise(data, 0.0, 0)[0][0], data[0][0])
    assert jaccard(torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4])) == 0.5


# ---------------------------------------------------------------- toy experiment


def test_toy_mlp_learns_moons_and_pruning_a_third_gives_valid_accuracies() -> None:
    x, y = toy_data("moons", 300, 0)
    torch.manual_seed(0)
    model = ToyMLP(2, width=48)
    train_toy(model, x, y, steps=300, seed=0, lr=3e-3)
    assert accuracy(model, x, y) > 95
    for criterion in TOY_CRITERIA:
        scores = unit_scores(model, criterion, *reference_points("moons", 5, 0))
        pruned = prune_globally(model, scores)
        assert int(pruned.mask.sum()) == 3 * 48 - 48 and 0 <= accuracy(pruned, x, y) <= 100
    assert int(model.mask.sum()) == 3 * 48  # the dense model is left alone
    xs, ys, grid = decision_grid(model, x, resolution=20)
    assert grid.shape == (20, 20) and set(grid.flatten().tolist()) <= {0, 1}


def test_toy_scores_use_exactly_the_n_reference_points() -> None:
    torch.manual_seed(0)
    model = ToyMLP(4, width=16).eval()
    points, labels = reference_points("spiral", 3, 7)
    assert len(points) == len(labels) == 3
    record = []
    with torch.no_grad():
        model(points, record)
    raw = [a.abs().mean(0) for _, a in record]
    expected = [r.double() / r.double().norm() for r in raw]
    for got, want in zip(unit_scores(model, "nuclear", points, labels), expected, strict=True):
        torch.testing.assert_close(got, want)
    x, y = toy_data("spiral", 400, 0)
    assert x.shape == (400, 2) and sorted(set(y.tolist())) == [0, 1, 2, 3]
    assert not torch.equal(reference_points("spiral", 3, 8)[0], points)



def test_imagenet_experiment_runs_one_tiny_step_on_synthetic_data(tiny_cfg, tmp_path) -> None:
    """ResNet-50 at HRankPlus's 20-slot rates through Torch-Pruning, one smoke step (random weights, 32 px)."""
    cfg = tiny_cfg("experiment=energy_aware_imagenet", "model.pretrained=false", "dataset=synthetic",
                   "dataset.num_train=16", "dataset.num_test=8", "trainer=smoke", "device=cpu",
                   "method.scoring.images=4", tiny=False)
    record = pipeline.run(cfg, tmp_path / "run")
    assert record["experiment"] == "energy_aware_imagenet" and record["model"] == "resnet50"
    assert record["target"] == "[0.1]+[0.2]*3+[0.5]*16" and 0.5 < record["macs_reduction"] < 0.7
