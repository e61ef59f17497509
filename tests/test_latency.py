"""Measured latency: the timed form is exact (BatchNorm folding, float64), and the plumbing records it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prunelab import pipeline
from prunelab.layers import factorise
from prunelab.measure.latency import fold_batchnorm, inference_form, measure_latency
from prunelab.models import build_model

F64 = torch.float64


def trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, float64, eval mode."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.double().eval()


@pytest.mark.parametrize("arch", [
    {"arch": "cifar_resnet", "name": "r20", "depth": 20, "widths": [4, 8, 16]},
    {"arch": "cifar_vgg", "name": "vgg", "cfg": [8, "M", 16, 16], "classifier_hidden": [16], "conv_bias": True,
     "final_pool": "avg"},
])
def test_folding_batchnorm_is_exact_and_removes_every_conv_bn(arch: dict) -> None:
    model = trained_like(build_model(arch, 10))
    x = torch.randn(3, 3, 8, 8, dtype=F64)
    folded = fold_batchnorm(model, (3, 8, 8))
    torch.testing.assert_close(folded(x), model(x), rtol=1e-10, atol=1e-10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched


class SharedOutput(nn.Module):
    """`y = conv(x); bn(y) + y`: the conv's raw output is read twice, so its BN must not be folded into it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)
        self.head_bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.head_bn(self.head(self.bn(y) + y)).mean((2, 3))


class ReusedConv(nn.Module):
    """One conv called twice, its BN after one call only: folding would change the other call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(self.conv(x))).mean((2, 3))


@pytest.mark.parametrize("make", [SharedOutput, ReusedConv])
def test_a_batchnorm_is_folded_only_where_it_alone_reads_the_convs_output(make) -> None:
    model = trained_like(make())
    x = torch.randn(3, 3, 8, 8, dtype=F64)
    folded = fold_batchnorm(model, (3, 8, 8))
    torch.testing.assert_close(folded(x), model(x), rtol=1e-10, atol=1e-10)
    assert isinstance(folded.bn, nn.BatchNorm2d)  # left as it is
    if make is SharedOutput:
        assert isinstance(folded.head_bn, nn.Identity)  # the head's BN is its conv's sole reader


def test_a_hub_resnet_folds_every_batchnorm() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = trained_like(torchvision.models.resnet18(num_classes=10))
    folded = fold_batchnorm(model, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-10, atol=1e-10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_a_batchnorm_that_also_activates_is_not_folded_away() -> None:
    layers = pytest.importorskip("timm.layers")
    model = trained_like(nn.Sequential(nn.Conv2d(3, 4, 3), layers.BatchNormAct2d(4, act_layer=nn.ReLU)))
    folded = fold_batchnorm(model, (3, 8, 8))
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-10, atol=1e-10)


def test_a_fold_that_changes_the_logits_is_refused_before_timing(monkeypatch) -> None:
    from prunelab.measure import latency
    from prunelab.models.structure import conv_bn_pairs

    monkeypatch.setattr(latency, "sole_conv_bn_pairs", conv_bn_pairs)  # the unchecked pairing folds shared outputs
    timed = []
    monkeypatch.setattr(latency, "_median_s", lambda *args: timed.append(args) or 1.0)
    with pytest.raises(RuntimeError, match="BatchNorm folding moved the logits .* measure.latency.fold_bn=false"):
        measure_latency(trained_like(SharedOutput()).float(), SharedOutput(), (3, 8, 8), [1], rounds=1)
    assert timed == []


def test_the_timed_form_of_an_exported_low_rank_model_is_exact() -> None:
    model = trained_like(build_model({"arch": "cifar_resnet", "name": "r20", "depth": 20, "widths": [4, 8, 16]}, 10))
    factorise(model, {"layer1.0.conv1": 2, "layer2.0.conv2": 3})
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    torch.testing.assert_close(inference_form(model, (3, 8, 8))(x), model(x), rtol=1e-10, atol=1e-10)


def test_measure_latency_reports_each_batch_and_the_speedup() -> None:
    dense = build_model({"arch": "cifar_resnet", "name": "r20", "depth": 20, "widths": [8, 16, 32]}, 10)
    small = build_model({"arch": "cifar_resnet", "name": "r20", "depth": 20, "widths": [4, 8, 16]}, 10)
    out = measure_latency(small, dense, (3, 8, 8), [1, 4], min_run_time=0.01, rounds=1)
    for batch in (1, 4):
        row = out[f"batch_{batch}"]
        assert row["ms"] > 0 and row["dense_ms"] > 0
        assert row["speedup"] == pytest.approx(row["dense_ms"] / row["ms"])
    assert out["fold_bn"] and out["threads"] == torch.get_num_threads()


def test_a_run_records_its_latency(tiny_cfg, tmp_path: Path) -> None:
    on = "measure.latency={batch:[2],fold_bn:true,min_run_time:0.01}"  # the tiny config turns it off
    record = pipeline.run(tiny_cfg("method=l1", on), tmp_path / "run")
    latency = record["extra"]["latency"]
    assert set(latency["batch_2"]) == {"ms", "dense_ms", "speedup"} and latency["batch_2"]["speedup"] > 0
    off = pipeline.run(tiny_cfg("method=l1", "seed=1"), tmp_path / "off")
    assert "latency" not in off["extra"]


def test_the_profile_prices_latency_before_training() -> None:
    from prunelab.config import compose_config
    from prunelab.profile import profile

    cfg = compose_config(["model=resnet20", "model.widths=[4,8,16]", "dataset=synthetic", "dataset.image_size=8",
                          "method=l1", "measure.latency.batch=[2]", "measure.latency.min_run_time=0.01"])
    out = profile(cfg, latency=True)
    assert out["latency"]["batch_2"]["speedup"] > 0 and "latency" not in profile(cfg)


def test_round_to_gives_hardware_friendly_widths_and_is_recorded(tiny_cfg, tmp_path: Path) -> None:
    from prunelab.surgery import kept_count

    assert [kept_count(64, 0.6, 8), kept_count(16, 0.3, 8), kept_count(64, 0.6), kept_count(5, 0.9, 8)] == [32, 16, 25, 5]
    record = pipeline.run(tiny_cfg("method=l1", "method.ratio=0.6", "model.widths=[8,16,32]", "method.round_to=4"),
                          tmp_path / "run")
    assert record["target"] == "ratio=0.6; round_to=4"
    from prunelab.train import checkpoint as ckpt

    model = ckpt.load_model(tmp_path / "run" / "model.pt")
    inner = [m.conv1.out_channels for m in model.modules() if hasattr(m, "conv1") and hasattr(m, "conv2")]
    assert inner and all(width % 4 == 0 for width in inner)
    from prunelab.measure import count

    assert (count(model, (3, 8, 8)).params, count(model, (3, 8, 8)).macs) == (record["params"], record["macs"])


def test_the_latency_benchmark_runs_and_records_its_provenance(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from conftest import REPO

    pytest.importorskip("onnxruntime")
    done = subprocess.run([sys.executable, "experiments/bench_latency.py", "--only", "l1 0.6 round_to=8", "--batch", "2",
                           "--min-run-time", "0.01", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads((tmp_path / "latency.json").read_text())["rows"]
    assert row["macs_speedup"] > 1 and row["latency"]["batch_2"]["speedup"] > 0 and row["onnxruntime_speedup"] > 0
    assert (tmp_path / "latency-speedup.png").is_file()
    assert "Command: `python experiments/bench_latency.py" in (tmp_path / "latency.md").read_text()
