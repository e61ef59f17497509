"""Cheap spatial transformations (docs/papers/spatial_transform.md §7): the two forward paths, the counts and
their formulas, the warp families, the least-squares refit, the pruning controller, the network counters,
compaction, the method end to end and its bad inputs."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunelab import pipeline, profile
from prunelab.config import compose_config
from prunelab.errors import UserError
from prunelab.layers.cst import CSTConv2d, rotation_theta, sampling_matrix
from prunelab.measure import count
from prunelab.methods.base import Context, build_method
from prunelab.methods.cst import TemplatePruning, cst_layers, global_keep, pruned_fraction, replaceable
from prunelab.models import build_model
from prunelab.train import checkpoint as ckpt
from prunelab.train.callbacks import TrainState

F64 = torch.float64


def pruned_layer(c: int, n: int, m: int, g: int, stride: int = 1, k: int = 3, family: str = "scalar",
                 seed: int = 0, dilation: int = 1) -> CSTConv2d:
    """A float64 layer with a random kept set of m templates, round-robin children and random transformations."""
    gen = torch.Generator().manual_seed(seed)
    layer = CSTConv2d(c, n, k, stride=stride, padding=k // 2, dilation=dilation, bias=True, groups=g,
                      family=family).double()
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=gen)[:m]] = True
    layer.reassign(keep, "ones")
    with torch.no_grad():
        layer.weight.normal_(generator=gen)
        layer.bias.normal_(generator=gen)
        for name in ("scale", "angle", "theta"):
            if hasattr(layer, name):
                p = getattr(layer, name)
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=F64))
    return layer


GRID = [(8, 12, 4, 1, 1, 3), (8, 12, 4, 2, 1, 3), (16, 20, 5, 4, 2, 3), (6, 9, 3, 3, 1, 1), (8, 10, 3, 2, 2, 5)]


@pytest.mark.parametrize("family", ["scalar", "rotation", "affine", "affine+scalar"])
@pytest.mark.parametrize(("c", "n", "m", "g", "stride", "k"), GRID)
def test_the_filter_path_equals_the_two_stage_path(c: int, n: int, m: int, g: int, stride: int, k: int,
                                                   family: str) -> None:
    layer = pruned_layer(c, n, m, g, stride, k, family)
    x = torch.randn(2, c, 9, 11, dtype=F64)
    filtered = layer.filter_forward(x)
    assert (filtered - layer.two_stage_forward(x)).abs().max() < 1e-12
    compact = layer.compact()
    assert (compact.two_stage_forward(x) - filtered).abs().max() < 1e-12
    assert (compact(x) - filtered).abs().max() < 1e-12


def test_dilation_is_supported_on_both_paths() -> None:
    layer = pruned_layer(4, 6, 2, 2, stride=2, dilation=2)
    x = torch.randn(1, 4, 10, 10, dtype=F64)
    assert (layer.filter_forward(x) - layer.two_stage_forward(x)).abs().max() < 1e-12


def test_without_pruning_the_layer_is_the_conv_bit_for_bit() -> None:
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=True).double()
    layer = CSTConv2d.like(conv, groups=2)
    x = torch.randn(2, 8, 9, 9, dtype=F64)
    assert torch.equal(layer(x), conv(x))
    assert (layer.two_stage_forward(x) - conv(x)).abs().max() < 1e-12
    assert layer.count_macs((x,), conv(x)) == 5 * 5 * 9 * 8 * 12


@pytest.mark.parametrize(("c", "n", "m", "g", "k", "params", "dense"),
                         [(8, 12, 4, 1, 3, 360, 864), (8, 12, 4, 2, 3, 432, 864), (16, 20, 5, 4, 3, 1260, 2880),
                          (6, 9, 3, 3, 1, 36, 54)])
def test_parameter_count_and_ratio_formula(c: int, n: int, m: int, g: int, k: int, params: int, dense: int) -> None:
    layer = pruned_layer(c, n, m, g, k=k).compact()
    weights = sum(p.numel() for name, p in layer.named_parameters() if name != "bias")
    assert weights == params == k * k * c * m + k * k * g * (n - m) and k * k * c * n == dense
    assert weights / dense == pytest.approx(m / n + g / c - g * m / (c * n), abs=1e-15)
    y = layer(torch.randn(1, c, 7, 7, dtype=F64))
    assert layer.count_macs((), y) == 49 * params  # H_out W_out times the per-pixel weights
    assert (weights < dense) == (g < c)


def test_the_warp_families_count_their_parameters_and_four_macs_per_tap() -> None:
    for family, per_child in (("rotation", 1), ("affine", 6), ("affine+scalar", 6 + 9)):
        layer = pruned_layer(8, 12, 4, 2, family=family).compact()
        weights = sum(p.numel() for name, p in layer.named_parameters() if name != "bias")
        assert weights == 9 * 8 * 4 + per_child * 2 * 8
        assert layer.count_macs((), torch.zeros(1, 12, 5, 5)) == 25 * (9 * 8 * 4 + 4 * 9 * 2 * 8)


def test_the_affine_family_identities() -> None:
    b = torch.randn(5, 3, 3, dtype=F64)
    identity = sampling_matrix(torch.eye(2, 3, dtype=F64), (3, 3))
    assert torch.equal(identity, torch.eye(9, dtype=F64))
    s = sampling_matrix(rotation_theta(torch.tensor(math.pi / 2, dtype=F64)), (3, 3))
    rotated = (s @ b.flatten(1).T).T.reshape(5, 3, 3)
    assert any((rotated - torch.rot90(b, k, (1, 2))).abs().max() < 1e-12 for k in (1, 3))
    theta = torch.eye(2, 3, dtype=F64) + 0.4 * torch.randn(7, 2, 3, dtype=F64)
    s = sampling_matrix(theta, (3, 3))
    assert ((s != 0).sum(-1) <= 4).all()
    sampled = F.grid_sample(b[None].expand(7, 5, 3, 3), F.affine_grid(theta, (7, 5, 3, 3), align_corners=True),
                            mode="bilinear", padding_mode="zeros", align_corners=True)
    assert (sampled - torch.einsum("nkl,cl->nck", s, b.flatten(1)).reshape(7, 5, 3, 3)).abs().max() < 1e-12


def test_warps_at_the_identity_have_a_gradient() -> None:
    """A warp starts at the identity; bilinear weights written as a tent would give it no gradient there."""
    b = torch.randn(9, dtype=F64)
    angle = torch.zeros(2, dtype=F64, requires_grad=True)
    (sampling_matrix(rotation_theta(angle), (3, 3)) @ b).square().sum().backward()
    theta = torch.eye(2, 3, dtype=F64).repeat(2, 1, 1).requires_grad_()
    (sampling_matrix(theta, (3, 3)) @ b).square().sum().backward()
    assert angle.grad.abs().min() > 0 and theta.grad[:, :, :2].abs().sum() > 0


def test_the_least_squares_refit_recovers_a_transform_and_never_does_worse_than_a_copy() -> None:
    layer = pruned_layer(8, 6, 6, 2)  # all templates
    child = 4  # the only pruned output: round robin rebuilds it from the first template, output 0
    truth = torch.rand(2, 3, 3, dtype=F64) + 0.5
    with torch.no_grad():
        layer.weight[child] = (layer.weight[0].reshape(2, 4, 3, 3) * truth[:, None]).reshape(8, 3, 3)
    keep = torch.ones(6, dtype=torch.bool)
    keep[child] = False
    before = layer.effective_weight().clone()
    layer.reassign(keep, "lstsq")
    assert int(layer.row[child]) == 0 and (layer.scale[child] - truth).abs().max() < 1e-12
    assert (layer.effective_weight()[child] - before[child]).abs().max() < 1e-12
    for seed in range(5):  # random filters: the refit is the least-squares optimum, so never worse than T = 1
        a = pruned_layer(8, 6, 6, 2, seed=seed)
        b = pruned_layer(8, 6, 6, 2, seed=seed)
        target = a.effective_weight()[3].clone()
        drop = torch.ones(6, dtype=torch.bool)
        drop[3] = False
        a.reassign(drop, "lstsq")
        b.reassign(drop, "ones")
        err_ls = (a.effective_weight()[3] - target).norm()
        err_copy = (b.effective_weight()[3] - target).norm()
        assert err_ls <= err_copy + 1e-12


@pytest.mark.parametrize("family", ["scalar", "affine"])
def test_gradients_of_both_paths_and_templates_learn_from_their_children(family: str) -> None:
    layer = pruned_layer(4, 6, 2, 2, family=family)
    x = torch.randn(1, 4, 5, 5, dtype=F64, requires_grad=True)
    for path in ("filter", "two_stage"):
        layer.path = path
        assert torch.autograd.gradcheck(lambda inp, w: layer(inp), (x, layer.weight))
    children = (~layer.templates).nonzero().flatten()
    layer.weight.grad = None
    layer(x)[:, children].square().sum().backward()  # only rebuilt outputs in the loss
    sources = layer.row[children].unique()
    assert layer.weight.grad[sources].abs().sum(dim=(1, 2, 3)).min() > 0


@pytest.mark.parametrize("path", ["filter", "two_stage"])
def test_gradients_are_bit_for_bit_repeatable(path: str) -> None:
    """Advanced indexing's backward accumulates in a thread-dependent order on the CPU; the layer's gathers do not."""
    layer = pruned_layer(32, 48, 12, 2, family="affine+scalar").float()
    layer.path = path
    x = torch.randn(8, 32, 12, 12)
    grads = []
    for _ in range(4):
        layer.zero_grad()
        layer(x).square().sum().backward()
        grads.append([p.grad.clone() for p in layer.parameters()])
    assert all(torch.equal(a, b) for g in grads[1:] for a, b in zip(grads[0], g, strict=True))


def toy_net(widths: tuple[int, ...] = (8, 12, 16)) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [nn.BatchNorm2d(a), nn.ReLU(), nn.Conv2d(a, b, 3, padding=1)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 4))


def cst_model(rate: float, ramp: int, min_templates: int, **overrides) -> tuple[nn.Module, object]:
    cfg = compose_config(["method=cst", f"method.rate={rate}", f"method.ramp_epochs={ramp}",
                          f"method.min_templates={min_templates}", *[f"method.{k}={v}" for k, v in overrides.items()]])
    method = build_method(cfg.method)
    torch.manual_seed(0)
    model = method.prepare(toy_net().double(), Context(SimpleNamespace(input_shape=(3, 8, 8)), torch.device("cpu"), 0))
    return model, method


def test_the_pruning_controller_follows_the_ramp_monotonically_and_freezes() -> None:
    model, method = cst_model(0.6, 4, 3)
    (callback,) = method.callbacks(None)
    state = TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))
    callback.on_fit_start(state)
    layers = list(cst_layers(model).values())
    total = sum(m.out_channels for m in layers)
    previous = [m.templates.clone() for m in layers]
    for epoch in range(7):
        state.epoch = epoch
        with torch.no_grad():  # training moves the weights between ramp steps
            for m in layers:
                m.weight.add_(0.05 * torch.randn_like(m.weight))
        mapping = [(m.row.clone(), m.slot.clone()) for m in layers]
        callback.on_epoch_end(state)
        want = 0.6 * min(1.0, (epoch + 1) / 4)
        assert abs(pruned_fraction(cst_layers(model)) - want) <= len(layers) / total + 1e-9
        for m, before in zip(layers, previous, strict=True):
            assert m.num_templates >= 3 and not (m.templates & ~before).any()  # floor and monotone
            children = torch.bincount(m.row[~m.templates], minlength=m.out_channels)
            assert children.max() <= math.ceil((m.out_channels - m.num_templates) / m.num_templates)
        if epoch >= 4:  # after the ramp the mapping is frozen
            assert all(torch.equal(r, m.row) and torch.equal(s, m.slot) for (r, s), m in zip(mapping, layers,
                                                                                           strict=True))
        previous = [m.templates.clone() for m in layers]


def test_a_template_pruned_later_hands_its_children_on_by_least_squares() -> None:
    model, _ = cst_model(0.5, 2, 2)
    layer = cst_layers(model)["3"]  # 8 -> 12
    keep = torch.ones(12, dtype=torch.bool)
    keep[[1, 5, 9]] = False
    layer.reassign(keep, "lstsq")
    parent = int(layer.row[1])
    before = layer.effective_weight().clone()
    fewer = layer.templates.clone()
    fewer[parent] = False
    layer.reassign(fewer, "lstsq")
    after = layer.effective_weight()
    moved = [n for n in range(12) if not layer.templates[n] and not torch.equal(before[n], after[n])]
    assert parent in moved
    for n in moved:  # each moved filter is the least-squares fit of what it was onto its new template
        source = layer.weight[layer.row[n]].reshape(2, 4, 9)
        want = before[n].reshape(2, 4, 9)
        fit = (want * source).sum(1) / source.square().sum(1)
        assert (after[n].reshape(2, 4, 9) - fit[:, None] * source).abs().max() < 1e-12


def test_global_selection_respects_the_floor() -> None:
    a, b = pruned_layer(4, 6, 6, 2), pruned_layer(4, 6, 6, 2, seed=1)
    keep = global_keep([a, b], [torch.arange(6.0), torch.arange(6.0) + 100], prune=8, min_templates=2)
    assert [int(k.sum()) for k in keep] == [2, 2]
    keep = global_keep([a, b], [torch.arange(6.0), torch.arange(6.0) + 100], prune=3, min_templates=2)
    assert [int(k.sum()) for k in keep] == [3, 6]


def test_replaceable_convs_skip_the_first_and_the_pointwise() -> None:
    model = build_model({"arch": "hub", "name": "resnet18", "source": "torchvision"}, 10)
    names = replaceable(model)
    assert "conv1" not in names and all(model.get_submodule(n).kernel_size == (3, 3) for n in names)
    assert len(replaceable(model, pointwise=True)) == len(names) + 3  # the downsample 1x1 convs


GOLDEN = {"vgg16_cst": (14_728_266, 14_719_818, 313_201_664), "resnet56": (853_018, 848_954, 125_485_696)}


@pytest.mark.parametrize("model", sorted(GOLDEN))
def test_dense_counts_of_the_paper_models(model: str) -> None:
    cfg = compose_config([f"model={model}", "dataset=cifar10"])
    cost = count(build_model(cfg.model, 10, pretrained=False), (3, 32, 32))
    assert (cost.params, cost.params_no_bn, cost.macs) == GOLDEN[model]


@pytest.mark.parametrize(("model", "rate", "params_red", "macs_red"), [
    ("vgg16_cst", 0.5, 49.7, 49.1), ("vgg16_cst", 0.7, 69.5, 68.8), ("vgg16_cst", 0.9, 89.5, 88.0),
    ("resnet56", 0.5, 47.6, 46.1), ("resnet56", 0.7, 65.8, 58.4), ("resnet56", 0.9, 79.4, 65.8),
])
def test_uniform_rate_reductions_match_the_spec(model: str, rate: float, params_red: float, macs_red: float) -> None:
    out = profile.profile(compose_config([f"model={model}", "dataset=cifar10", "method=cst", f"method.rate={rate}"]))
    assert 100 * out["params_reduction"] == pytest.approx(params_red, abs=0.1)
    assert 100 * out["macs_reduction"] == pytest.approx(macs_red, abs=0.1)


def test_drop_in_shapes_compaction_keeps_logits_and_the_counter_agrees_with_a_module_walk() -> None:
    torch.manual_seed(0)
    for name in ("resnet20", "vgg16_cst"):
        cfg = compose_config([f"model={name}", "method=cst", "method.rate=0.6", "method.ramp_epochs=0",
                              "method.min_templates=4"])
        dense = build_model(cfg.model, 10).double().eval()
        method = build_method(cfg.method)
        ctx = Context(SimpleNamespace(input_shape=(3, 32, 32)), torch.device("cpu"), 0)
        model = method.prepare(dense, ctx).eval()
        x = torch.randn(2, 3, 32, 32, dtype=F64)
        assert model(x).shape == (2, 10)
        (callback,) = method.callbacks(ctx)
        callback.on_fit_start(TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu")))
        y = model(x)
        small = method.finalize(model, ctx)
        assert ctx.extra["compaction_error"] < 1e-12 and (small(x) - y).abs().max() < 1e-10
        cost = count(small, (3, 32, 32))
        for layer_cost, layer in zip([c for c in cost.per_layer if c.kind == "CSTConv2d"],
                                     cst_layers(small).values(), strict=True):
            c, n, m, g = layer.in_channels, layer.out_channels, layer.num_templates, layer.groups
            walk = sum(p.numel() for p in layer.parameters()) - (n if layer.bias is not None else 0)
            assert walk == 9 * c * m + 9 * g * (n - m)
            assert layer_cost.macs == math.prod(layer_cost.out_shape[1:]) * walk


def test_the_method_end_to_end_reloads_and_counts_the_compact_model(tiny_cfg, tmp_path: Path) -> None:
    record = pipeline.run(tiny_cfg("method=cst", "method.rate=0.5", "method.ramp_epochs=1", "method.min_templates=2",
                                   "trainer.epochs=2", "trainer.limit_steps=2"), tmp_path / "run")
    stages = [ckpt.load(path) for path in (tmp_path / "checkpoints").glob("*/*.pt")]
    assert [s["step"] for s in stages] == [2 * 2] and record["epochs_finetune"] == 2  # the cut-short schedule only
    assert record["method"] == "cst" and record["target"] == "rate=0.5; G=2; minT=2; ramp_epochs=1"
    assert record["acc_compressed"] is None  # from scratch
    extra = record["extra"]
    assert extra["compaction_error"] < 1e-5 and extra["pruned_fraction"] == pytest.approx(0.5, abs=0.05)
    assert record["macs"] < record["base_macs"] and record["params"] < record["base_params"]
    model = ckpt.load_model(tmp_path / "run" / "model.pt")
    assert all(layer.compacted for layer in cst_layers(model).values())
    assert count(model, (3, 8, 8)).macs == record["macs"]


@pytest.mark.parametrize("overrides", [
    ["method.family=affine", "method.from_dense=true", "method.ramp_epochs=0"],
    ["method.saliency=taylor", "method.path=two_stage"],
    ["method.family=rotation", "method.saliency=magnitude", "method.transform_init=ones"],
])
def test_the_options_run(tiny_cfg, tmp_path: Path, overrides: list[str]) -> None:
    record = pipeline.run(tiny_cfg("method=cst", "method.min_templates=2", "method.ramp_epochs=1",
                                   "trainer.epochs=2", *overrides), tmp_path / "run")
    assert record["extra"]["pruned_fraction"] > 0.3
    assert (record["acc_compressed"] is None) == ("method.from_dense=true" not in overrides)


@pytest.mark.parametrize(("overrides", "message"), [
    (["method.groups=3"], "method.groups=3 does not divide the 4 input channels"),
    (["method.min_templates=9"], "method.min_templates=9 exceeds the 4 filters"),
    (["method.rate=1"], "method.rate=1 must be in [0, 1)"),
    (["method.rate=-0.1"], "method.rate=-0.1 must be in [0, 1)"),
    (["method.family=shear"], "method.family"),
    (["method.saliency=hrank"], "method.saliency"),
])
def test_bad_settings_name_the_key(tiny_cfg, tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        pipeline.run(tiny_cfg("method=cst", *overrides), tmp_path / "run")
    assert not (tmp_path / "runs.csv").exists()


def test_the_layer_benchmark_runs_and_records_its_provenance(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, "experiments/bench_cst.py", "--batch-size", "2", "--min-run-time", "0.01",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "cst.json").read_text())
    assert [r["templates"] for r in record["rows"]] == [32, 128, 256]
    assert all(r["macs_cst"] < r["macs_dense"] and r["two_stage_ms"] > 0 for r in record["rows"])
    assert "Command: `python experiments/bench_cst.py" in (tmp_path / "cst.md").read_text()
