"""Basis scaling and double pruning (docs/papers/basis_pruning.md §6): float64 identities of the decomposition,
pruning, export and gates; what trains; the Taylor score; costs; the rounds; double pruning's plumbing."""

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
from prunelab.layers import LowRankConv2d
from prunelab.layers.basis import BasisConv2d, basis_layers, decompose, export_all, keep_top
from prunelab.layers.gate import GatedBatchNorm2d
from prunelab.measure import count
from prunelab.methods.base import Context, build_method
from prunelab.methods.basis import decomposable, energy_rank
from prunelab.methods.channel_gates import gates
from prunelab.methods.rounds import Unit, prune_lowest, taylor_scores
from prunelab.models import build_model
from prunelab.profile import profile
from prunelab.train.loop import fit

from conftest import compose_config

F64 = torch.float64


def conv(ci: int, co: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1, bias: bool = False):
    torch.manual_seed(ci * 100 + co * 10 + k)
    return nn.Conv2d(ci, co, k, stride, padding, dilation, bias=bias).double()


def decomposed(layer: nn.Conv2d) -> BasisConv2d:
    return decompose(nn.Sequential(copy.deepcopy(layer)), ["0"])[0]


GRID = list(itertools.product([(3, 8, 3), (16, 8, 3), (4, 64, 1), (8, 8, 5)], [1, 2], [0, 1], [1, 2], [False, True]))


@pytest.mark.parametrize(("shape", "stride", "padding", "dilation", "bias"), GRID)
def test_the_full_rank_decomposition_is_the_conv(shape, stride, padding, dilation, bias) -> None:
    layer = conv(*shape, stride, padding, dilation, bias)
    x = torch.randn(2, shape[0], 9, 9, dtype=F64)
    basis = decomposed(layer)
    torch.testing.assert_close(basis(x), layer(x), rtol=1e-10, atol=1e-10)
    filters = basis.basis.weight.flatten(1)
    r = basis.rank
    assert r == min(shape[1], shape[0] * shape[2] ** 2)
    torch.testing.assert_close(filters @ filters.T, torch.eye(r, dtype=F64), rtol=0, atol=1e-10)  # orthonormal
    u = basis.scaling.vectors
    torch.testing.assert_close(u.T @ u, torch.eye(r, dtype=F64), rtol=0, atol=1e-10)
    assert basis.basis.stride == layer.stride and basis.scaling.vectors.shape[0] == shape[1]


def test_pruning_equals_masking_equals_the_merged_conv_and_the_truncated_svd() -> None:
    layer = conv(8, 12, 3, padding=1, bias=True)
    basis = decomposed(layer)
    with torch.no_grad():
        basis.scaling.scale.uniform_(0.5, 1.5)
    basis.scaling.mask[4] = 0  # 11 of 12 kept: the pair (11 x 84 weights) costs more than the conv (12 x 72)
    x = torch.randn(2, 8, 7, 7, dtype=F64)
    masked = basis(x)
    pair, merged = basis.export(merge=False), basis.export(merge=True)
    assert isinstance(pair, LowRankConv2d) and pair.rank == 11 and isinstance(merged, nn.Conv2d)
    torch.testing.assert_close(pair(x), masked, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(merged(x), masked, rtol=1e-10, atol=1e-10)
    # s = 1 and the k largest singular values: the rank-k truncated SVD, error sqrt(sum of dropped sigma^2)
    plain = decomposed(layer)
    keep_top(plain, 5)
    m = layer.weight.reshape(12, -1)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    w5 = plain.export(merge=False).dense_weight().reshape(12, -1)
    torch.testing.assert_close(w5, u[:, :5] @ torch.diag(s[:5]) @ vh[:5], rtol=1e-10, atol=1e-10)
    assert torch.linalg.matrix_norm(m - w5).item() == pytest.approx(s[5:].square().sum().sqrt().item(), rel=1e-10)


def test_export_takes_the_cheaper_form_and_the_cost_formulas_hold() -> None:
    layer = conv(64, 64, 3, padding=1)
    basis = decomposed(layer)
    d, co = 64 * 9, 64
    assert basis.weights() == (64 * (d + co), co * d)  # full rank: the pair costs more
    assert 576 * 64 / (576 + 64) == pytest.approx(57.6)  # break-even rank of a 64 -> 64 3x3 layer
    keep_top(basis, 58)
    assert isinstance(basis.export(), nn.Conv2d)
    keep_top(basis, 57)
    pair = basis.export()
    assert isinstance(pair, LowRankConv2d) and sum(p.numel() for p in pair.parameters()) == 57 * (d + co)
    model = nn.Sequential(basis)
    assert count(model, (64, 8, 8)).macs == 57 * (d + co) * 64 == count(nn.Sequential(pair), (64, 8, 8)).macs
    stem = decomposed(conv(3, 64, 3, padding=1))
    assert stem.rank == 27 and 27 * 64 / (27 + 64) == pytest.approx(18.99, abs=0.01)  # break-even 19


def test_the_vgg16_conv_stack_grows_at_full_rank_and_merges_back_to_the_dense_counts() -> None:
    model = build_model({"arch": "cifar_vgg", "name": "vgg16", "cfg": [64, 64, "M", 128, 128, "M", 256, 256, 256,
                        "M", 512, 512, 512, "M", 512, 512, 512], "classifier_hidden": [512], "conv_bias": False,
                         "final_pool": "avg"}, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.weight.numel() for m in convs) == 14_710_464
    full = decompose(copy.deepcopy(model), decomposable(model)[0], torch.float32)
    assert sum(m.weights()[0] for m in basis_layers(full).values()) == 16_517_529
    dense, merged = count(model, (3, 32, 32)), count(export_all(full), (3, 32, 32))
    assert (merged.params, merged.macs) == (dense.params, dense.macs)  # a ratio of 0 against the undecomposed model


def toy_with_add_and_concat() -> nn.Module:
    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 4, 1)
            self.dw = nn.Conv2d(10, 10, 3, padding=1, groups=10)
            self.head = nn.Linear(10, 5)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            y = torch.cat([x + self.a(x), self.b(x)], 1)  # a residual add and a concatenation
            return self.head(self.dw(y).mean((2, 3)))

    torch.manual_seed(0)
    return Toy().double()


def test_decomposition_keeps_channels_and_function_with_adds_concats_and_depthwise_convs() -> None:
    model = toy_with_add_and_concat()
    names, grouped = decomposable(model)
    assert names == ["stem", "a", "b"] and grouped == ["dw"]  # depthwise convs are left intact
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    out = decompose(copy.deepcopy(model), names)
    torch.testing.assert_close(out(x), model(x), rtol=1e-10, atol=1e-10)
    assert isinstance(out.dw, nn.Conv2d) and {n: m.scaling.vectors.shape[0] for n, m in basis_layers(out).items()} == {
        "stem": 6, "a": 6, "b": 4}


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model({"arch": "cifar_resnet", "name": "r20", "depth": 20, "widths": [4, 8, 16]}, 10)


def test_only_the_scales_and_the_head_train(tiny_cfg) -> None:
    cfg = tiny_cfg("method=basis", "dataset.val_images=16", "trainer.lr=0.05")
    from prunelab.data import build_dataset

    data = build_dataset(cfg.dataset, torch.device("cpu"))
    method = build_method(cfg.method)
    ctx = Context(data, torch.device("cpu"), 0, cfg.trainer)
    model = method.prepare(small_resnet(), ctx)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (stage,) = [s for s in method.stages(ctx)]
    stage.callbacks = []  # one plain epoch, no rounds
    fit(model, data, stage, device=torch.device("cpu"), seed=0)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith("scaling.scale") or k.startswith("fc.") for k in changed)
    assert {"fc.weight", "fc.bias"} <= changed  # BN statistics, bases, sigma and U are bit-identical


def test_the_taylor_score_is_the_squared_first_order_term() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4)).double()
    model = decompose(model, ["0"])
    layer = model[0]
    with torch.no_grad():
        layer.scaling.sigma[2] = 0  # a basis of zero singular value scores zero
        layer.scaling.scale.uniform_(0.5, 1.5)
    x, y = torch.randn(6, 3, 7, 7, dtype=F64), torch.randint(0, 4, (6,))
    units = {"0": Unit(layer.scaling.scale, layer.scaling.mask, layer.scaling.sigma)}
    scores = taylor_scores(model, units, [(x, y)])["0"]
    s = layer.scaling.scale
    for i in range(len(s)):
        eps = 1e-6
        with torch.no_grad():
            s[i] += eps
            up = F.cross_entropy(model(x), y)
            s[i] -= 2 * eps
            down = F.cross_entropy(model(x), y)
            s[i] += eps
        assert scores[i].item() == pytest.approx((s[i].item() * (up - down).item() / (2 * eps)) ** 2, rel=1e-5, abs=1e-14)
    assert scores[2] == 0


def test_global_pruning_keeps_min_keep_per_layer() -> None:
    units = {n: Unit(nn.Parameter(torch.ones(4)), torch.ones(4), torch.ones(4)) for n in ("a", "b")}
    scores = {"a": torch.tensor([1.0, 2, 3, 4]), "b": torch.tensor([10.0, 20, 30, 40])}
    assert prune_lowest(units, scores, fraction=0.75, min_keep=2) == 4
    assert units["a"].mask.tolist() == [0, 0, 1, 1] and units["b"].mask.tolist() == [0, 0, 1, 1]
    assert prune_lowest(units, scores, fraction=0.5, min_keep=2) == 0  # nothing left above min_keep


def test_the_energy_rule_keeps_the_fewest_bases_holding_the_energy() -> None:
    sigma = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1, 0 of 14
    assert [energy_rank(sigma, e) for e in (0.5, 9 / 14, 0.92, 1.0)] == [1, 1, 2, 3]


def test_a_gated_batchnorm_folds_into_the_batchnorm_exactly() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6).double().eval()
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    gated = GatedBatchNorm2d.like(bn).eval()
    x = torch.randn(2, 6, 4, 4, dtype=F64)
    torch.testing.assert_close(gated(x), bn(x), rtol=0, atol=0)  # open gates: the same BN
    with torch.no_grad():
        gated.gate.uniform_(-1, 2)
    gated.mask[3] = 0
    torch.testing.assert_close(gated.deploy().eval()(x), gated(x), rtol=1e-12, atol=1e-12)


def gated_model(method) -> tuple[nn.Module, Context]:
    ctx = Context(SimpleNamespace(input_shape=(3, 8, 8), num_val=8), torch.device("cpu"), 0)
    model = method.prepare(small_resnet().double().eval(), ctx).eval()
    for g in gates(model).values():
        g.running_mean.uniform_(-0.2, 0.2)
        with torch.no_grad():
            g.gate.uniform_(0.3, 1.5)
        g.mask[: g.num_features // 2] = 0
    return model, ctx


def test_closed_gates_are_removed_exactly() -> None:
    method = build_method(compose_config(["method=taylor_gates"]).method)
    model, ctx = gated_model(method)
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    expected = model(x)
    pruned = method.finalize(copy.deepcopy(model), ctx).eval()
    torch.testing.assert_close(pruned(x), expected, rtol=1e-10, atol=1e-10)
    assert pruned.spec.mids == [2] * 3 + [4] * 3 + [8] * 3 and pruned.spec.stem == 2 and not gates(pruned)


def test_closed_gates_of_a_hub_model_are_removed_exactly() -> None:
    """Torch-Pruning traces the hub model's graph with autograd on, also when the gates close during rounds."""
    method = build_method(compose_config(["method=taylor_gates"]).method)
    torch.manual_seed(0)
    model = build_model({"arch": "hub", "name": "resnet18", "source": "torchvision", "head": "keep"}, 10).double()
    ctx = Context(SimpleNamespace(input_shape=(3, 32, 32), num_val=8), torch.device("cpu"), 0, model_name="resnet18")
    model = method.prepare(model, ctx).eval()
    for g in gates(model).values():
        g.mask[: g.num_features // 2] = 0
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    expected = model(x)
    pruned = method.finalize(copy.deepcopy(model), ctx).eval()
    torch.testing.assert_close(pruned(x), expected, rtol=1e-10, atol=1e-10)
    assert pruned.layer1[0].conv1.out_channels == 32 and not gates(pruned)


def test_double_pruning_decomposes_the_channel_pruned_network_exactly() -> None:
    method = build_method(compose_config(["method=double"]).method)
    model, ctx = gated_model(method.inner)
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    expected = model(x)
    (gate_stage, basis_stage) = method.stages(Context(ctx.data, ctx.device, 0, compose_config([]).trainer))
    assert (gate_stage.name, basis_stage.name) == ("gates", "basis")
    model = basis_stage.setup(model).eval()  # the pruner's finalize, then the full-rank decomposition
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
    assert model.spec.mids == [2] * 3 + [4] * 3 + [8] * 3 and len(basis_layers(model)) == 19
    assert method.label == "double(taylor_gates)"


def test_rounds_on_synthetic_data_prune_bases_and_respect_the_tolerance(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg("method=basis", "dataset.val_images=16", "method.reference_epochs=1", "method.max_rounds=3",
                   "method.fraction=0.3", "method.tolerance=100", "method.scoring.batches=2")
    record = pipeline.run(cfg, tmp_path / "run")
    rounds = record["extra"]["rounds"]
    kept = [r["kept"] for r in rounds if r["event"] == "trained"]
    assert len(kept) == 4 and all(a > b for a, b in zip(kept, kept[1:]))  # bases strictly decrease
    assert min(record["extra"]["kept_bases"].values()) >= 1  # no layer empties
    assert record["base_acc"] == record["extra"]["acc_reference"] == rounds[0]["test_acc"]
    assert record["params"] <= record["base_params"] < record["extra"]["full_rank_params"]
    strict = pipeline.run(tiny_cfg("method=basis", "dataset.val_images=16", "method.reference_epochs=1",
                                   "method.max_rounds=3", "method.fraction=0.9", "method.tolerance=0",
                                   "method.scoring.batches=2", "seed=1"), tmp_path / "strict")
    rows = strict["extra"]["rounds"]
    reference = rows[0]["val_acc"]
    for row in rows:  # a pruning step outside the tolerance is undone, and it ends the rounds
        assert row.get("restored", False) == (row["event"] == "pruned" and reference - row["val_acc"] > 0)
    assert not any(r.get("restored") for r in rows[:-1])


def test_profile_prices_the_decomposition_and_a_budget() -> None:
    full = profile(compose_config(["method=basis", "model=resnet56", "dataset=cifar10"]))
    assert full["full_rank_params"] > full["base_params"] and "more than the dense model" in full["note"]
    assert (full["params"], full["macs"]) == (full["base_params"], full["base_macs"])  # merged back at full rank
    half = profile(compose_config(["method=basis", "model=resnet56", "dataset=cifar10", "method.keep=0.25"]))
    assert half["params"] < full["params"] and half["decomposed_params"] < half["full_rank_params"]


@pytest.mark.parametrize(("override", "message"), [
    ("method.tolerance=-1", "method.tolerance=-1 must be >= 0"),
    ("method.fraction=1.5", "method.fraction=1.5 must be in (0, 1)"),
    ("method.min_keep=0", "method.min_keep=0 must be >= 1"),
    ("method.keep=0", "method.keep=0"),
])
def test_bad_settings_name_the_key(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_method(compose_config(["method=basis", override]).method)


def test_a_model_without_ungrouped_convs_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.LazyLinear(2))
    ctx = Context(SimpleNamespace(input_shape=(4, 5, 5), num_val=4), torch.device("cpu"), 0, model_name="dw")
    with pytest.raises(UserError, match="no ungrouped Conv2d"):
        build_method(compose_config(["method=basis"]).method).prepare(model, ctx)


@pytest.mark.parametrize(("name", "source", "head"), [
    ("resnet50", "torchvision", "keep"), ("vgg16", "torchvision", "gap_linear"), ("densenet121", "torchvision", "keep"),
    ("mobilenet_v2", "torchvision", "keep"), ("resnet18", "timm", "keep"),
])
def test_hub_backbones_decompose_exactly_with_depthwise_convs_left_alone(name: str, source: str, head: str) -> None:
    torch.manual_seed(0)
    model = build_model({"arch": "hub", "name": name, "source": source, "head": head}, 10).double().eval()
    names, grouped = decomposable(model)
    assert bool(grouped) == (name == "mobilenet_v2")  # its depthwise convs: counted as unprunable
    x = torch.randn(1, 3, 32, 32, dtype=F64)
    out = decompose(copy.deepcopy(model), names).eval()
    torch.testing.assert_close(out(x), model(x), rtol=1e-8, atol=1e-8)
    assert len(basis_layers(out)) == len(names) and count(export_all(out), (3, 32, 32)).params == \
        count(model, (3, 32, 32)).params  # full rank merges back to the dense layers
    if head == "gap_linear":  # VGG's fc6/fc7 replaced by pooling + one Linear
        assert [type(m) for m in (model.avgpool, model.classifier)] == [nn.AdaptiveAvgPool2d, nn.Linear]


@pytest.mark.parametrize(("overrides", "message"), [
    (["method=basis", "method.fraction=0"], "error: method.fraction=0 must be in (0, 1)"),
    (["method=double", "method.tolerance=-0.5"], "error: method.tolerance=-0.5 must be >= 0"),
    (["method=basis", "method.min_keep=0"], "error: method.min_keep=0 must be >= 1"),
    (["method=basis", "dataset.val_images=0"], "error: method=basis selects its pruning rounds on a validation split"),
    (["method=basis", "model=hub", "model.name=resnet18", "model.pretrained=true"],
     "error: model.pretrained=true: could not load pretrained weights"),
])
def test_bad_input_from_the_command_line_is_one_line_and_no_row(tmp_path: Path, overrides, message: str) -> None:
    import os
    import subprocess
    import sys

    from conftest import REPO, TINY

    tiny = [o for o in TINY if not (o.startswith("model") and "model=hub" in overrides)]
    where = [f"results.csv={tmp_path}/runs.csv", f"paths.baselines={tmp_path}/b", f"paths.checkpoints={tmp_path}/c",
             f"hydra.run.dir={tmp_path}/run"]
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "no-weights"), "HF_HUB_OFFLINE": "1"}  # nothing cached
    done = subprocess.run([sys.executable, "run.py", *tiny, *where, *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs.csv").exists()


def test_the_benchmark_runs_and_records_its_provenance(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, "experiments/bench_basis.py", "--batches", "1", "--repeats", "1",
                           "--batch-size", "2", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "basis.json").read_text())
    assert record["decomposed_convs"] == 53 and record["basis_layers"] == 55 and record["taylor_scoring_s"] > 0
    assert "Command: `python experiments/bench_basis.py" in (tmp_path / "basis.md").read_text()
