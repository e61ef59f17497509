"""LRPET: projection identities (float64), BN rectification, rank plans, export equivalence, README counts,
dead layers and a two-epoch training smoke test (docs/papers/lrpet.md §6)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prunelab.errors import UserError
from prunelab.layers.lowrank import LowRankConv2d, to_lowrank
from prunelab.layers.zero import ZeroConv2d
from prunelab.measure import count
from prunelab.methods.base import Context, build_method
from prunelab.methods.lrpet import LRPET, dead_layers, energy_transfer, plan_ranks, project, project_model, rank_for
from prunelab.models import build_model
from prunelab.train.callbacks import TrainState

CONF = Path(__file__).resolve().parents[1] / "conf"
CIFAR = (3, 32, 32)
IMAGENET = (3, 224, 224)
LRPET_VGG16 = {  # LRPET's VGG-16-bn: the same 13 convs (bias on), a final max-pool and a single Linear
    "arch": "cifar_vgg", "name": "vgg16_lrpet", "conv_bias": True, "final_pool": "avg", "classifier_hidden": [],
    "cfg": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}
RESNET56_S = [6, 6, 3, 5, 2, 3, 4, 4, 2, 3, 6, 1, 2, 4, 4, 5, 2, 1, 2, 10, 6, 2, 6, 6, 7, 9, 1, 5, 4, 11, 6, 2, 2, 12,
              12, 5, 4, 16, 6, 17, 23, 11, 3, 11, 17, 4, 12, 15, 16, 6, 7, 6, 24, 18, 15]


def method_cfg(**overrides) -> DictConfig:
    cfg = OmegaConf.load(CONF / "method" / "lrpet.yaml")
    cfg.pop("defaults")
    return OmegaConf.merge(cfg, overrides)


def context(cfg: DictConfig, input_shape: tuple[int, ...] = CIFAR) -> Context:
    return Context(SimpleNamespace(input_shape=input_shape), torch.device("cpu"), seed=0)


def cifar_resnet(depth: int, widths: list[int] = (16, 32, 64)) -> nn.Module:
    return build_model({"arch": "cifar_resnet", "name": f"resnet{depth}", "depth": depth, "widths": list(widths)}, 10)


def randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """BN statistics and affine parameters with |a| = |gamma| / sqrt(var + eps) in about [0.35, 2.1]."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen, dtype=torch.float64) * 0.1)


def svals(m: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(m.double())


def truncated(m: torch.Tensor, r: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return u[:, :r] @ torch.diag(s[:r]) @ vh[:r]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP barriers, which stall for seconds when another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mat() -> torch.Tensor:
    return torch.randn(32, 144, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


# ---- projection and energy transfer (LRPET §2.3)


def test_energy_is_preserved(mat: torch.Tensor) -> None:
    out = project(mat, 6)
    torch.testing.assert_close(out.square().sum(), mat.square().sum(), rtol=1e-10, atol=0)
    out32 = project(mat.float(), 6, dtype=torch.float32)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.square().sum(), mat.float().square().sum(), rtol=1e-5, atol=0)


def test_closed_form_rank_and_idempotence(mat: torch.Tensor) -> None:
    out = project(mat, 6)
    p = truncated(mat, 6)
    torch.testing.assert_close(out, mat.norm() / p.norm() * p, rtol=0, atol=1e-12)
    s = svals(out)
    assert torch.linalg.matrix_rank(out, tol=1e-8) == 6
    assert (s[6:] < 1e-10 * s[0]).all()
    torch.testing.assert_close(project(out, 6), out, rtol=0, atol=1e-10)


def test_soft_tail_additive_and_plain_truncation(mat: torch.Tensor) -> None:
    s, r = svals(mat), 6
    soft = project(mat, r, redu_fac=0.5)
    torch.testing.assert_close(soft.square().sum(), mat.square().sum(), rtol=1e-10, atol=0)
    torch.testing.assert_close(svals(soft)[r:], 0.5 * s[r:], rtol=1e-9, atol=0)
    additive = project(mat, r, transfer="additive")
    torch.testing.assert_close(additive.square().sum(), mat.square().sum(), rtol=1e-10, atol=0)
    shares = s[:r].square() + s[r:].square().sum() / r
    torch.testing.assert_close(svals(additive)[:r].square(), shares, rtol=1e-10, atol=0)
    torch.testing.assert_close(project(mat, r, transfer="none"), truncated(mat, r), rtol=0, atol=1e-12)


def test_batched_projection_equals_per_matrix(mat: torch.Tensor) -> None:
    stack = torch.stack([mat, 2 * mat.flip(0), mat.roll(3, 1)])
    ranks = torch.tensor([1, 6, 32])
    out = project(stack, ranks)
    for m, r, o in zip(stack, ranks.tolist(), out):
        torch.testing.assert_close(o, project(m, r), rtol=0, atol=1e-12)
    s = torch.rand(4, 10, dtype=torch.float64).sort(descending=True).values
    kept = energy_transfer(s, torch.tensor([1, 2, 5, 10]))
    torch.testing.assert_close(kept.square().sum(-1), s.square().sum(-1), rtol=1e-12, atol=0)


# ---- BN rectification (LRPET §2.4)


def test_bn_rectification(mat: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(1)
    gamma = torch.rand(32, generator=gen, dtype=torch.float64) + 0.5
    var = torch.rand(32, generator=gen, dtype=torch.float64) * 1.5 + 0.5
    a = gamma / torch.sqrt(var + 1e-5)
    out = project(mat, 6, a)
    assert torch.linalg.matrix_rank(out, tol=1e-8) == 6
    folded = a[:, None] * mat
    torch.testing.assert_close((a[:, None] * out).square().sum(), folded.square().sum(), rtol=2e-4, atol=0)
    full = project(mat, 32, a)  # nothing removed: only the damped inverse remains
    torch.testing.assert_close(full, (a.square() / (a.square() + 1e-5))[:, None] * mat, rtol=0, atol=1e-12)
    a[3] = 0.0  # gamma = 0: a zero row, no NaN
    dead_row = project(mat, 6, a)
    assert torch.isfinite(dead_row).all() and (dead_row[3] == 0).all()


def test_bn_rectified_projection_is_optimal_in_the_folded_space(mat: torch.Tensor) -> None:
    a = torch.linspace(0.2, 3.0, 32, dtype=torch.float64)
    rectified = project(mat, 6, a, transfer="none", bn_eps=1e-30)  # exact inverse 1/a
    plain = project(mat, 6, transfer="none")
    assert not torch.allclose(rectified, plain, atol=1e-3)
    error = [torch.linalg.norm(a[:, None] * (mat - m)) for m in (rectified, plain)]
    assert error[0] < error[1]
    torch.testing.assert_close(a[:, None] * rectified, truncated(a[:, None] * mat, 6), rtol=0, atol=1e-10)


# ---- rank plans and conv-BN pairing (LRPET §2.2, §2.4)


def test_rank_formula_and_guard() -> None:
    assert rank_for(450, 0.54) == 206  # float truncation, as the official code
    assert rank_for(16, 0.999) == 1 and rank_for(3, 0.9) == 1
    plan = plan_ranks(cifar_resnet(56), CIFAR, 0.57)
    assert len(plan) == 55 and all(p.bn is not None for p in plan)
    by_stage = {w: {p.rank for p in plan if p.n == w} for w in (16, 32, 64)}
    assert by_stage == {16: {6}, 32: {13}, 64: {27}}
    assert {p.rank for p in plan_ranks(cifar_resnet(8, [4, 8, 16]), CIFAR, 0.99)} == {1}


@pytest.mark.parametrize(("name", "convs", "first"), [("resnet18", 20, 26), ("resnet50", 53, 24)])
def test_torchvision_pairing(name: str, convs: int, first: int) -> None:
    model = build_model({"arch": "hub", "name": name}, 1000)
    plan = plan_ranks(model, (3, 64, 64), 0.62 if name == "resnet50" else 0.58)
    assert len(plan) == convs and all(p.bn is not None for p in plan)  # plan_ranks checks BN width == Cout
    assert plan[0].rank == first
    assert any("downsample" in p.name and model.get_submodule(p.name).kernel_size == (1, 1) for p in plan)


def test_vgg_clamp_and_rank_lists() -> None:
    vgg = build_model(LRPET_VGG16, 10)
    assert [p.rank for p in plan_ranks(vgg, CIFAR, 0.92, floors=(18, 43))] == [18] + [43] * 12
    resnet = cifar_resnet(56)
    method = LRPET(method_cfg(ranks=RESNET56_S))
    method.prepare(resnet, context(method.cfg))
    assert [p.rank for p in method.plan] == RESNET56_S and method.target == "ranks=list(55)"
    short = LRPET(method_cfg(ranks=RESNET56_S[:-1]))
    with pytest.raises(UserError, match=r"method\.ranks has 54 entries .* give 55 ranks"):
        short.prepare(resnet, context(short.cfg))
    too_big = LRPET(method_cfg(ranks=[17] + RESNET56_S[1:]))
    with pytest.raises(UserError, match=r"method\.ranks\[0\]=17"):
        too_big.prepare(resnet, context(too_big.cfg))


@pytest.mark.parametrize("g", [0.0, 1.0, 1.5, -0.1])
def test_rank_ratio_out_of_range(g: float) -> None:
    with pytest.raises(UserError, match=r"method\.rank_ratio"):
        build_method(method_cfg(rank_ratio=g))


def test_config_composes_with_its_trainer() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["method=lrpet"])
        t = cfg.trainer
        assert (t.name, t.epochs, list(t.milestones), t.batch_size, t.lr) == ("lrpet_cifar", 400, [200, 300], 128, 0.1)
        assert compose("config", overrides=["method=lrpet", "trainer=cifar_baseline"]).trainer.name == "cifar_baseline"
        imagenet = compose("config", overrides=["method=lrpet", "trainer=lrpet_imagenet"]).trainer
        assert (imagenet.epochs, list(imagenet.milestones), imagenet.batch_size) == (120, [30, 60, 90], 256)
    method = build_method(cfg.method)
    assert isinstance(method, LRPET) and method.trains_from_scratch and method.target == "g=0.57"
    with pytest.raises(UserError, match="method.energy_transfer"):
        build_method(method_cfg(energy_transfer="bogus"))


# ---- export (LRPET §2.6)


class TinyNet(nn.Module):
    """A stride-2 conv with BN, a 1x1 conv with bias and no BN (projected plainly), a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.point = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.point(F.relu(self.bn(self.conv(x)))))
        return self.fc(x.mean((2, 3)))


EXPORT_MODELS = {
    "resnet8": lambda: cifar_resnet(8, [4, 8, 16]),
    "vgg_bias": lambda: build_model({**LRPET_VGG16, "cfg": [8, "M", 16, 16, "M"]}, 10),
    "tiny": TinyNet,
}


@pytest.mark.parametrize("name", sorted(EXPORT_MODELS))
def test_exported_network_equals_projected_network(name: str) -> None:
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    model = EXPORT_MODELS[name]().double().eval()
    randomise_bn(model, gen)
    method = LRPET(method_cfg(rank_ratio=0.5))
    ctx = context(method.cfg, (3, 16, 16))
    method.prepare(model, ctx)
    project_model(model, method.plan, method.how)
    weights = {p.name: model.get_submodule(p.name).weight.detach().clone() for p in method.plan}
    for p in method.plan:
        assert torch.linalg.matrix_rank(weights[p.name].flatten(1), tol=1e-9) <= p.rank
    x = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    projected = model(x)
    exported = method.finalize(model, ctx)
    torch.testing.assert_close(exported(x), projected, rtol=0, atol=1e-6)
    for p in method.plan:
        layer = exported.get_submodule(p.name)
        assert isinstance(layer, LowRankConv2d) and layer.rank == p.rank
        torch.testing.assert_close(layer.dense_weight(), weights[p.name], rtol=0, atol=1e-10)
    assert ctx.extra["dead_layers"] == 0 and ctx.extra["export_macs"] == ctx.extra["nominal_macs"]


def test_dead_layer_becomes_a_zero_branch_not_an_identity() -> None:
    torch.manual_seed(3)
    model = cifar_resnet(8, [4, 8, 16]).double().eval()
    method = LRPET(method_cfg(rank_ratio=0.5))
    ctx = context(method.cfg)
    method.prepare(model, ctx)
    dead = "layer1.0.conv2"
    model.get_submodule(dead).weight.data.zero_()
    project_model(model, method.plan, method.how)
    assert torch.isfinite(torch.cat([p.flatten() for p in model.parameters()])).all()
    assert (model.get_submodule(dead).weight == 0).all()
    assert dead_layers(model, method.plan, method.how) == [dead]
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    projected = model(x)
    exported = method.finalize(model, ctx)
    zero = exported.get_submodule(dead)
    assert isinstance(zero, ZeroConv2d)
    h = torch.randn(2, 4, 32, 32, dtype=torch.float64)
    assert zero(h).shape == h.shape and (zero(h) == 0).all()
    torch.testing.assert_close(exported(x), projected, rtol=0, atol=1e-6)
    assert ctx.extra["dead_layers"] == 1 and ctx.extra["dead_layer_names"] == [dead]
    assert ctx.extra["export_macs"] < ctx.extra["nominal_macs"]


# ---- README counts (LRPET §4.1-4.2): MACs of conv + linear, parameters without BN

RESNET18, RESNET34, RESNET50 = ({"arch": "hub", "name": n} for n in ("resnet18", "resnet34", "resnet50"))
RESNET56 = {"arch": "cifar_resnet", "depth": 56, "widths": [16, 32, 64]}
# model, g, VGG clamp 18/43, input, golden MACs, golden params (no BN), README FLOPs, README params
README_ROWS = {
    "resnet56": (RESNET56, 0.57, False, CIFAR, 56_058_496, 394_460, "56.06M", "0.39M"),
    "resnet110": ({**RESNET56, "depth": 110}, 0.65, False, CIFAR, 93_781_632, 655_345, "93.78M", "0.65M"),
    "vgg16": (LRPET_VGG16, 0.92, True, CIFAR, 81_292_288, 1_626_416, "81.29M", "1.62M"),
    "resnet18": (RESNET18, 0.58, False, IMAGENET, 860_879_872, 5_813_654, "0.86B", "5.81M"),
    "resnet34": (RESNET34, 0.58, False, IMAGENET, 1_715_377_152, 10_511_254, "1.71B", "10.51M"),
    "resnet50": (RESNET50, 0.62, False, IMAGENET, 1_902_865_408, 12_887_216, "1.90B", "12.89M"),
}


def figure(text: str) -> tuple[float, float]:
    """("56.06M") -> (value, unit of the last printed digit)."""
    number, scale = text[:-1], {"M": 1e6, "B": 1e9, "G": 1e9}[text[-1]]
    return float(number) * scale, scale * 10.0 ** -len(number.partition(".")[2])


def printed(value: int, text: str) -> bool:
    """`value` shows as the README figure `text`: the README rounds some figures
    (56.058M -> 56.06M) and truncates others (0.6553M -> 0.65M, 1.7154B -> 1.71B)."""
    shown, unit = figure(text)
    return shown - unit / 2 <= value < shown + unit


def readme_model(row: str) -> tuple[nn.Module, DictConfig, tuple[int, ...]]:
    model_cfg, g, clamp, shape = README_ROWS[row][:4]
    floors = {"rank_floor_first": 18, "rank_floor": 43} if clamp else {}
    return build_model(model_cfg, 1000 if shape == IMAGENET else 10), method_cfg(rank_ratio=g, **floors), shape


@pytest.mark.parametrize("row", ["resnet56", "resnet110"])
def test_readme_counts_of_the_exported_model(row: str) -> None:
    """What the profiler does: finalize (SVD export) a random-weight model, without training or prepare."""
    model, cfg, shape = readme_model(row)
    ctx = context(cfg, shape)
    cost = count(LRPET(cfg).finalize(model, ctx), shape)
    macs, params, flops_figure, params_figure = README_ROWS[row][4:]
    assert (cost.macs, cost.params_no_bn) == (macs, params)
    assert printed(cost.macs, flops_figure) and printed(cost.params_no_bn, params_figure)
    assert ctx.extra["nominal_macs"] == ctx.extra["export_macs"] == macs


@pytest.mark.parametrize("row", ["vgg16", "resnet18", "resnet34", "resnet50"])
def test_readme_counts_of_the_exported_structure(row: str) -> None:
    """The same structure (`to_lowrank`, which `factorise` fills) without the SVDs, to keep the test fast."""
    model, cfg, shape = readme_model(row)
    method = LRPET(cfg)
    method.prepare(model, context(cfg, (3, 32, 32)))
    cost = count(to_lowrank(model, {p.name: p.rank for p in method.plan}), shape)
    macs, params, flops_figure, params_figure = README_ROWS[row][4:]
    assert (cost.macs, cost.params_no_bn) == (macs, params)
    assert printed(cost.macs, flops_figure) and printed(cost.params_no_bn, params_figure)


def test_spec_finer_figures() -> None:
    """docs/papers/lrpet.md §6.11 quotes one more digit, all rounded: 0.394M, 0.655M, 1.626M, 0.861G, 1.715G, 1.903G."""
    finer = {"resnet56": (5, "0.394M"), "resnet110": (5, "0.655M"), "vgg16": (5, "1.626M"),
             "resnet18": (4, "0.861G"), "resnet34": (4, "1.715G"), "resnet50": (4, "1.903G")}
    for row, (column, text) in finer.items():
        shown, unit = figure(text)
        assert abs(README_ROWS[row][column] - shown) <= unit / 2, row


# ---- training smoke test (LRPET §2.5)


def matrix_ranks(model: nn.Module, names: list[str]) -> list[int]:
    weights = [model.get_submodule(n).weight.detach().flatten(1).double() for n in names]
    return [int(torch.linalg.matrix_rank(w, rtol=1e-6)) for w in weights]


@pytest.mark.parametrize(("every", "projections"), [(0, 2), (4, 4)])
def test_two_epoch_training_smoke(every: int, projections: int) -> None:
    torch.manual_seed(4)
    model = cifar_resnet(8, [4, 8, 8])
    method = LRPET(method_cfg(rank_ratio=0.6, project_every=every))
    ctx = context(method.cfg)
    method.prepare(model, ctx)
    (callback,) = method.callbacks(ctx)
    names, ranks = [p.name for p in method.plan], [p.rank for p in method.plan]
    images, labels = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    state = TrainState(model, optimizer, torch.device("cpu"), epochs=2, steps_per_epoch=8, phase="scratch")
    callback.on_fit_start(state)
    for epoch in range(2):
        state.epoch, state.step_in_epoch = epoch, 0
        model.train()
        for i in range(8):
            loss = F.cross_entropy(model(images[32 * i : 32 * (i + 1)]), labels[32 * i : 32 * (i + 1)])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert torch.isfinite(loss)
            state.step, state.step_in_epoch = state.step + 1, i + 1
            callback.on_step_end(state)
        buffers = {n: optimizer.state[model.get_submodule(n).weight]["momentum_buffer"] for n in names}
        callback.on_epoch_end(state)
        assert all(optimizer.state[model.get_submodule(n).weight]["momentum_buffer"] is b for n, b in buffers.items())
        assert all(b.abs().sum() > 0 for b in buffers.values())
        assert all(got <= r for got, r in zip(matrix_ranks(model, names), ranks))
    assert callback.projections == projections and callback.state_dict()["projections"] == projections
    model.eval()
    x = images[:4]
    projected = model(x)
    exported = method.finalize(model, ctx)
    torch.testing.assert_close(exported(x), projected, rtol=1e-4, atol=1e-4)
    extra = ctx.extra
    assert extra["projections"] == projections and extra["energy_transfer"] == "scale" and extra["bn_rectify"]
    assert set(extra) >= {"nominal_macs", "export_macs", "nominal_params_no_bn", "export_params_no_bn", "rank_ratio"}
