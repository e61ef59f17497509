"""Linear over-parameterization (docs/papers/linear_overparam.md §7): exact contraction, output-preserving and
non-degenerate expansion, the similarity-preserving loss, the frozen teacher, counts, and the method end to end."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunelab import pipeline
from prunelab.errors import UserError
from prunelab.layers.expanded import ExpandedConv2d, ExpandedLinear, init_expansion
from prunelab.measure import count
from prunelab.methods.base import Context, build_method
from prunelab.methods.lop import contract_all, expand, expandable
from prunelab.models import build_model
from prunelab.train import checkpoint as ckpt
from prunelab.train.similarity import similarity_matrix, similarity_preserving_loss

from prunelab.config import dataset_config
from prunelab.data import build_dataset

from conftest import compose_config

F64 = torch.float64
CPU = torch.device("cpu")
SYNTHETIC32 = ["dataset=synthetic", "dataset.num_train=16", "dataset.num_test=8", "trainer.batch_size=8"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("k", "stride", "padding", "dilation"),
                         [(k, s, p, d) for k, s, d in itertools.product([1, 3, 5], [1, 2], [1, 2])
                          for p in sorted({0, k // 2})])
def test_contraction_is_exact(k: int, stride: int, padding: int, dilation: int) -> None:
    block = ExpandedConv2d(4, 6, k, mid_in=9, mid_out=11, stride=stride, padding=padding, dilation=dilation,
                           bias=True).double()
    for p in block.parameters():
        nn.init.normal_(p)
    x = torch.randn(2, 4, 9, 9, dtype=F64)
    torch.testing.assert_close(block.contract()(x), block(x), rtol=1e-10, atol=1e-10)


def test_a_bias_inside_the_block_is_refused() -> None:
    block = ExpandedConv2d(4, 6, 3, mid_in=8, mid_out=12, padding=1)
    block.a.bias = nn.Parameter(torch.zeros(8))  # a bias before a zero-padded conv: not one conv
    with pytest.raises(ValueError, match="not contractible exactly"):
        block.contract()


@pytest.mark.parametrize("how", ["pinv", "orthonormal"])
@pytest.mark.parametrize("ratio", [1, 4])
def test_expansion_computes_the_layer_and_contracts_back_to_it(how: str, ratio: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, 2, 1, bias=True).double()
    linear = nn.Linear(6, 3).double()
    model = nn.Sequential(conv, nn.Flatten(), nn.LazyLinear(6).double(), nn.ReLU(), linear)
    x = torch.randn(2, 5, 8, 8, dtype=F64)
    expected = model(x)
    expanded = expand(copy.deepcopy(model), ["0", "4"], ratio, how, seed=0)
    assert isinstance(expanded[0], ExpandedConv2d) and isinstance(expanded[4], ExpandedLinear)
    assert expanded[0].b.weight.shape == (7 * ratio, 5 * ratio, 3, 3)
    torch.testing.assert_close(expanded(x), expected, rtol=1e-10, atol=1e-10)
    back = contract_all(expanded)
    torch.testing.assert_close(back[0].weight, conv.weight, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(back[4].weight, linear.weight, rtol=1e-10, atol=1e-10)
    assert torch.equal(back[0].bias, conv.bias) and torch.equal(back[4].bias, linear.bias)


def pruned(model_cfg: dict, ratio: float = 0.5, shape=(3, 16, 16)) -> tuple[nn.Module, nn.Module]:
    """(dense, L1-pruned) of a CIFAR model with random BN statistics, float64."""
    torch.manual_seed(0)
    dense = build_model(model_cfg, 10).double()
    for m in dense.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
    method = build_method(compose_config(["method=l1", f"method.ratio={ratio}"]).method)
    return dense, method.prepare(copy.deepcopy(dense), Context(SimpleNamespace(input_shape=shape), CPU, 0))


RESNET = {"arch": "cifar_resnet", "name": "r56", "depth": 56, "widths": [4, 8, 16]}
VGG = {"arch": "cifar_vgg", "name": "vgg16", "cfg": [8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 32, 32, 32, "M",
                                                     32, 32, 32], "classifier_hidden": [32], "conv_bias": True,
       "final_pool": "avg"}


@pytest.mark.parametrize("model_cfg", [RESNET, VGG], ids=["resnet56", "vgg16"])
def test_expanding_a_whole_pruned_network_keeps_its_outputs_in_eval_and_train_mode(model_cfg: dict) -> None:
    _, model = pruned(model_cfg)
    names = expandable(model, ".*")
    assert len(names) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    expanded = expand(copy.deepcopy(model), names, 4, "pinv", seed=0)
    x = torch.randn(4, 3, 16, 16, dtype=F64)
    for mode in (False, True):  # train mode: every BN sees the same batch statistics
        torch.testing.assert_close(expanded.train(mode)(x), model.train(mode)(x), rtol=1e-8, atol=1e-8)
    contracted = contract_all(expanded.eval())
    assert count(contracted, (3, 16, 16)).params == count(model, (3, 16, 16)).params
    assert contracted.state_dict().keys() == model.state_dict().keys()


def outside_share(update: torch.Tensor, basis: torch.Tensor) -> float:
    """Norm of the part of `update`'s columns outside span(basis's columns), relative to the update."""
    q, _ = torch.linalg.qr(basis.detach())
    update = update.detach()
    return float((update - q @ (q.T @ update)).norm() / update.norm())


@pytest.mark.parametrize(("how", "trains_extra_width"), [("pinv", True), ("orthonormal", False)])
def test_only_the_pinv_init_lets_the_extra_width_train(how: str, trains_extra_width: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False).double()
    block = ExpandedConv2d.like(conv, 4)
    init_expansion(block, conv.weight, gen(), how)
    a0, c0 = block.a.weight[:, :, 0, 0].clone(), block.c.weight[:, :, 0, 0].clone()
    opt = torch.optim.SGD(block.parameters(), lr=0.05)
    for _ in range(3):
        x, target = torch.randn(8, 3, 6, 6, dtype=F64), torch.randn(8, 4, 6, 6, dtype=F64)
        loss = F.mse_loss(block(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    a_move = block.a.weight[:, :, 0, 0] - a0  # M x Ci: does it leave the column space of A0 (in R^M)?
    c_move = block.c.weight[:, :, 0, 0] - c0  # Co x N: does it leave the row space of C0 (in R^N)?
    outside = max(outside_share(a_move, a0), outside_share(c_move.T, c0.T))
    assert (outside > 1e-3) == trains_extra_width, outside


def test_the_similarity_preserving_loss() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(6, 7, 4, 4), torch.randn(6, 16, 4, 4)  # different channel counts
    g = s.flatten(1) @ s.flatten(1).T
    assert torch.allclose(g, g.T)
    assert similarity_preserving_loss(s, s) == 0 and similarity_preserving_loss(s, 3 * s) < 1e-12
    loop = sum((similarity_matrix(s)[i, j] - similarity_matrix(t)[i, j]) ** 2 for i in range(6) for j in range(6)) / 36
    assert similarity_preserving_loss(s, t).item() == pytest.approx(float(loop), rel=1e-6)
    a, b = torch.randn(4, 3, 2, 2, dtype=F64, requires_grad=True), torch.randn(4, 5, 2, 2, dtype=F64)
    assert torch.autograd.gradcheck(lambda x: similarity_preserving_loss(x, b), (a,))
    with pytest.raises(ValueError, match="same batch"):
        similarity_preserving_loss(s, t[:3])
    with torch.autocast("cpu", torch.bfloat16):  # the Gram product of bf16 features is taken in float32
        assert similarity_matrix(s.bfloat16()).dtype == torch.float32


def test_training_then_contracting_matches_and_the_teacher_stays_frozen(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg("method=lop", "method.pruner.ratio=0.5", "method.gamma=3000", "trainer.epochs=2",
                   "trainer.limit_eval_batches=null")
    teacher_before = {}
    from prunelab.methods import lop as lop_module

    original = lop_module.SimilarityDistillation.on_fit_start

    def remember(self, state):
        teacher_before.update({k: v.clone() for k, v in self.teacher.state_dict().items()})
        original(self, state)

    lop_module.SimilarityDistillation.on_fit_start = remember
    contracted_logits = {}
    original_finalize = lop_module.LinearOverparam.finalize

    def check(self, model, ctx):
        x = next(iter(ctx.data.loader("test", 16, train=False)))[0]
        with torch.no_grad():
            expanded_out = model.eval()(x)
            out = original_finalize(self, model, ctx)
            contracted_logits["diff"] = float((out.eval()(x) - expanded_out).abs().max() / expanded_out.abs().max())
        teacher_after = ctx.teacher.state_dict()  # parameters and BN statistics
        contracted_logits["teacher"] = all(torch.equal(teacher_before[k], v) for k, v in teacher_after.items())
        contracted_logits["grads"] = all(p.grad is None for p in ctx.teacher.parameters())
        return out

    lop_module.LinearOverparam.finalize = check
    try:
        record = pipeline.run(cfg, tmp_path / "run")
    finally:
        lop_module.SimilarityDistillation.on_fit_start = original
        lop_module.LinearOverparam.finalize = original_finalize
    assert contracted_logits["diff"] < 1e-4 and contracted_logits["teacher"] and contracted_logits["grads"]
    assert 0 <= record["extra"]["contraction_error"] < 1e-5  # the method's own check, on random images
    plain = pipeline.run(tiny_cfg("method=l1", "method.ratio=0.5", "trainer.epochs=2", "trainer.limit_eval_batches=null"),
                         tmp_path / "plain")
    assert record["method"] == "lop(l1)" and record["target"] == "E=4; gamma=3000; ratio=0.5"
    assert (record["params"], record["macs"]) == (plain["params"], plain["macs"])
    assert record["acc_compressed"] == plain["acc_compressed"]  # the same pruned model before training
    reloaded = ckpt.load_model(tmp_path / "run" / "model.pt")
    template = ckpt.load_model(tmp_path / "plain" / "model.pt")
    template.load_state_dict(reloaded.state_dict(), strict=True)  # the plain pruned architecture


def test_fine_tuning_only_is_plain_fine_tuning(tiny_cfg, tmp_path: Path) -> None:
    ft = pipeline.run(tiny_cfg("method=lop", "method.expand=0", "method.gamma=0"), tmp_path / "ft")
    plain = pipeline.run(tiny_cfg("method=l1"), tmp_path / "plain")
    assert ft["method"] == "l1" and ft["target"] == plain["target"]
    for key in ("acc_compressed", "acc_final", "params", "macs"):
        assert ft[key] == plain[key], key
    a, b = (ckpt.load(tmp_path / r / "model.pt")["model"] for r in ("ft", "plain"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("overrides", "target"), [
    (["method.sp_layers=stages"], "E=4; gamma=3000; sp_layers=stages; ratio=0.5"),
    (["method.sp_feature=bn"], "E=4; gamma=3000; sp_feature=bn; ratio=0.5"),
    (["method.sp_feature=relu", "method.expand=0"], "E=off; gamma=3000; sp_feature=relu; ratio=0.5"),
    (["method.init=orthonormal", "method.noise=0.5"], "E=4,orthonormal; gamma=3000; ratio=0.5"),  # noise unused
    (["method.noise=0.5", "method.layers=conv"], "E=4; gamma=3000; noise=0.5; layers=conv; ratio=0.5"),
    (["method.init=orthonormal_noise", "method.expand=1", "method.head=false", "method.lr_match=false",
      "method.factor_lr_scale=0.5", "method.factor_decay=0", "method.sp_logits=true"],
     "E=1,orthonormal_noise; gamma=3000; head=False; lr_match=False; factor_lr_scale=0.5; factor_decay=0; "
     "sp_logits=True; ratio=0.5"),
])
def test_distillation_and_init_options_run_and_are_named(tiny_cfg, tmp_path: Path, overrides: list[str],
                                                         target: str) -> None:
    record = pipeline.run(tiny_cfg("method=lop", "method.pruner.ratio=0.5", *overrides), tmp_path / "run")
    assert record["method"] == "lop(l1)" and record["extra"].get("sp_pairs", 0) > 0 and record["target"] == target


@pytest.mark.parametrize(("overrides", "message"), [
    (["method.expand=-1"], "method.expand=-1"),
    (["method.gamma=-1"], "method.gamma=-1 must be >= 0"),
    (["method.layers=nosuchlayer"], "method.layers='nosuchlayer' matches no"),
    (["method.pruner=nosuch"], "method.pruner='nosuch' is not a method config"),
    (["method.layers='['"], "is not a regular expression"),
    (["method.noise=0"], "method.noise=0 must be > 0 with method.init=pinv"),
    (["method.sp_feature=bn", "method.sp_layers=stages"], "method.sp_feature=bn chooses the feature of each expanded"),
    (["method.expand=1"], "method.expand=1 with method.init=pinv: a square Gaussian factor is near-singular"),
    (["method.factor_lr_scale=0"], "method.factor_lr_scale=0 must be > 0"),
    (["method.factor_decay=-1"], "method.factor_decay=-1 must be >= 0"),
    (["trainer.optimizer=adam"], "method.lr_match=true matches the first SGD step; trainer.optimizer=adam"),
])
def test_bad_settings_name_the_key(tiny_cfg, tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(")):
        pipeline.run(tiny_cfg("method=lop", *overrides), tmp_path / "run")


def test_a_hub_model_pruned_by_torch_pruning_expands_and_contracts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    dense = build_model({"arch": "hub", "name": "resnet18", "source": "torchvision"}, 10).double().eval()
    cfg = compose_config(["method=lop", "method.pruner.ratio=0.5", "method.expand=2", *SYNTHETIC32])
    method = build_method(cfg.method)
    ctx = Context(build_dataset(dataset_config(cfg, cfg.dataset), CPU), CPU, 0, cfg.trainer, teacher=dense)
    model = method.prepare(copy.deepcopy(dense), ctx).eval()
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    expected = model(x)
    back = method.finalize(model, ctx).eval()
    torch.testing.assert_close(back(x), expected, rtol=1e-8, atol=1e-8)
    assert method.sp_pairs(ctx) and all(t in dict(dense.named_modules()) for _, t in method.sp_pairs(ctx))


def test_the_teacher_has_no_graph_and_runs_in_eval_mode() -> None:
    from prunelab.methods.lop import SimilarityDistillation
    from prunelab.train.callbacks import TrainState

    torch.manual_seed(0)
    teacher = build_model(RESNET, 10).eval()
    student = copy.deepcopy(teacher).train()
    callback = SimilarityDistillation(teacher, [("layer1", "layer1"), ("fc", "fc")], gamma=1.0)
    state = TrainState(student, torch.optim.SGD(student.parameters(), lr=0.1), CPU)
    callback.on_fit_start(state)
    x = torch.randn(4, 3, 8, 8)
    student(x)
    loss = callback.extra_loss(state, x, None, None)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    callback.on_fit_end(state)
    assert not any(m._forward_hooks for m in student.modules()) and not any(m._forward_hooks for m in teacher.modules())


# --- the optimisation of the expanded factors (§2.8) ---------------------------------------------------------------

def test_the_step_ratio_of_a_single_conv_matches_a_hand_computation() -> None:
    """1x1 conv: the first-order contracted step is -lr[G (BA)^T (BA) + C C^T G A^T A + (CB)(CB)^T G]; at a real lr
    the ratio is that of an actual SGD step on the factors, contracted."""
    from prunelab.methods.lop_steps import ContractedStep, contracted_update, step_ratio

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 5, 1, bias=False).double()
    block = ExpandedConv2d.like(conv, 2)
    init_expansion(block, conv.weight, gen(), "pinv")
    x, target = torch.randn(6, 4, 3, 3, dtype=F64), torch.randn(6, 5, 3, 3, dtype=F64)
    (block(x) - target).square().sum().backward()
    w = block.contract().weight.detach().requires_grad_()
    (F.conv2d(x, w) - target).square().sum().backward()
    g = w.grad[:, :, 0, 0]
    factors = tuple(t.detach().clone() for t in block.factors())
    a, b, c = factors[0], factors[1][:, :, 0, 0], factors[2]
    first_order = g @ (b @ a).T @ (b @ a) + c @ c.T @ g @ a.T @ a + (c @ b) @ (c @ b).T @ g
    directions = block.factor_views(block.a.weight.grad, block.b.weight.grad, block.c.weight.grad)
    step, plain = ContractedStep.of(factors, directions), float(w.grad.norm())
    assert step_ratio(step, plain, 1e-9) == pytest.approx(float(first_order.norm() / g.norm()), rel=1e-6)
    lr, before = 0.05, block.contract().weight
    with torch.no_grad():
        for p in block.parameters():
            p -= lr * p.grad
    moved = float((block.contract().weight - before).norm())
    assert step_ratio(step, plain, lr) == pytest.approx(moved / (lr * plain), rel=1e-10)
    assert float(contracted_update(factors, directions, lr).norm()) == pytest.approx(moved, rel=1e-12)
    assert step_ratio(step, plain, lr) > 1.5  # the pinv init at E = 2 moves W faster than plain


def lop_context(*overrides: str, model: dict = RESNET, dtype: torch.dtype = F64) -> tuple:
    """(method, ctx, dense) for a float64 CIFAR ResNet on 8x8 synthetic images, a real recipe (no momentum state)."""
    cfg = compose_config(["method=lop", "method.pruner.ratio=0.5", "method.expand=2", "dataset=synthetic",
                          "dataset.num_train=32", "dataset.image_size=8", "dataset.pad=1", "trainer.batch_size=16",
                          *overrides])
    torch.manual_seed(0)
    dense = build_model(model, 10).to(dtype).eval()
    ctx = Context(build_dataset(dataset_config(cfg, cfg.dataset), CPU), CPU, 0, cfg.trainer, teacher=dense)
    return build_method(cfg.method), ctx, dense


def one_sgd_step(model: nn.Module, groups, recipe, batch) -> None:
    """The first optimizer step of fine-tuning: the recipe's SGD at its base lr on `batch`, in training mode."""
    from prunelab.train.optim import build_optimizer, set_lr

    optimizer = build_optimizer(groups, recipe)
    set_lr(optimizer, float(recipe["lr"]))
    images, labels = batch
    model.train()
    F.cross_entropy(model(images.to(F64)), labels).backward()
    optimizer.step()


def first_steps(*overrides: str) -> tuple:
    """(method, ctx, {layer: (plain step norm, contracted LOP step norm)}) after one SGD step of both arms from the
    same pruned weights on the run's first batch."""
    from prunelab.methods.lop import first_batch
    from prunelab.train.stage import recipe_groups

    method, ctx, dense = lop_context(*overrides)
    expanded = method.prepare(copy.deepcopy(dense), ctx)
    plain = build_method(compose_config(["method=l1", "method.ratio=0.5"]).method).prepare(
        copy.deepcopy(dense), Context(ctx.data, CPU, 0, ctx.trainer))
    before = {n: plain.get_submodule(n).weight.detach().clone() for n in method.expanded}
    batch = first_batch(ctx)
    one_sgd_step(plain, recipe_groups(plain, ctx.trainer), ctx.trainer, batch)
    one_sgd_step(expanded, method.factor_groups(expanded), ctx.trainer, batch)
    steps = {n: (float((plain.get_submodule(n).weight - before[n]).norm()),
                 float((expanded.get_submodule(n).contract().weight - before[n]).norm())) for n in method.expanded}
    return method, ctx, steps


@pytest.mark.parametrize("init", ["pinv", "orthonormal_noise"])
def test_lr_match_makes_the_first_contracted_update_equal_the_plain_one(init: str) -> None:
    method, ctx, steps = first_steps(f"method.init={init}", "trainer.lr=0.05", "trainer.nesterov=true")
    used = ctx.extra["step_ratio_used"]
    assert set(used) == set(steps) == set(ctx.extra["step_ratio"]) and len(steps) == 56
    for name, (plain_step, lop_step) in steps.items():
        assert lop_step == pytest.approx(plain_step, rel=1e-6), name
        assert used[name] == pytest.approx(1.0, rel=1e-9)
    assert max(ctx.extra["step_ratio"].values()) > 1.5  # without the match the expansion moves faster


def test_without_lr_match_the_recorded_ratio_is_the_measured_step() -> None:
    method, ctx, steps = first_steps("method.lr_match=false", "method.factor_lr_scale=0.5")
    for name, (plain_step, lop_step) in steps.items():
        assert ctx.extra["step_ratio_used"][name] == pytest.approx(lop_step / plain_step, rel=1e-6)
        assert method.lr_scales[name] == 0.5


@pytest.mark.parametrize("decay_bn_and_bias", [True, False])
def test_the_factor_groups_hold_exactly_the_factors_and_every_parameter_once(decay_bn_and_bias: bool) -> None:
    method, ctx, dense = lop_context("method.factor_decay=0.001", "method.lr_match=false",
                                     f"trainer.decay_bn_and_bias={decay_bn_and_bias}")
    model = method.prepare(copy.deepcopy(dense), ctx)
    groups = method.stages(ctx)[0].groups(model)  # checks that no parameter appears twice
    assert sorted(id(p) for g in groups for p in g.params) == sorted(id(p) for p in model.parameters())
    factors = {id(getattr(model.get_submodule(n), part).weight) for n in method.expanded for part in "abc"}
    factor_groups = [g for g in groups if any(id(p) in factors for p in g.params)]
    assert len(factor_groups) == len(method.expanded) == 56
    assert all({id(p) for p in g.params} <= factors and len(g.params) == 3 for g in factor_groups)
    assert all(g.weight_decay == 0.001 for g in factor_groups)
    rest = [g for g in groups if not any(id(p) in factors for p in g.params)]  # BN and biases: every weight expanded
    assert len(rest) == 1 and rest[0].weight_decay == (None if decay_bn_and_bias else 0.0)


def test_the_classifier_and_the_logits_pair_are_options() -> None:
    method, ctx, dense = lop_context()
    method.prepare(copy.deepcopy(dense), ctx)
    assert "fc" in method.expanded and "fc" not in {s for s, _ in method.sp_pairs(ctx)}  # defaults
    method, ctx, dense = lop_context("method.sp_logits=true")
    method.prepare(copy.deepcopy(dense), ctx)
    assert ("fc", "fc") in method.sp_pairs(ctx)
    method, ctx, dense = lop_context("method.head=false", "method.sp_logits=true")
    model = method.prepare(copy.deepcopy(dense), ctx)
    assert "fc" not in method.expanded and isinstance(model.fc, nn.Linear) and len(method.expanded) == 55
    assert "fc" not in {s for s, _ in method.sp_pairs(ctx)}  # sp_layers=all pairs the expanded layers only


@pytest.mark.parametrize("overrides", [
    [], ["method.lr_match=false"], ["method.init=orthonormal_noise", "method.expand=1"], ["method.head=false"],
    ["method.sp_logits=true", "method.factor_decay=0", "method.factor_lr_scale=2"],
])
def test_every_option_trains_and_contracts_exactly(tiny_cfg, tmp_path: Path, overrides: list[str]) -> None:
    record = pipeline.run(tiny_cfg("method=lop", "method.pruner.ratio=0.5", "method.expand=2", "trainer.epochs=2",
                                   "dataset.val_images=8", *overrides), tmp_path / "run")
    extra = record["extra"]
    assert 0 <= extra["contraction_error"] < 1e-5
    assert set(extra["step_ratio"]) == set(extra["step_ratio_used"]) == set(extra["factor_lr_scale"])
    assert extra["sp_grad_ratio"] > 0 and extra["sp_loss_ratio"] > 0 and extra["lr"] == float(tiny_cfg().trainer.lr)
    if "method.lr_match=false" not in overrides:  # matched: the plain step, times factor_lr_scale to first order
        scale = 2.0 if "method.factor_lr_scale=2" in overrides else 1.0
        assert all(r == pytest.approx(scale, rel=1e-6 if scale == 1 else 0.05) for r in extra["step_ratio_used"].values())

