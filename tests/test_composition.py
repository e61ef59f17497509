"""Composition by delegation (methods/base.py `Composite`): `method=svd` wraps any channel pruner."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from prunelab import pipeline
from prunelab.errors import UserError
from prunelab.layers import LowRankConv2d, factorise
from prunelab.measure import count
from prunelab.methods.base import Context, build_method
from prunelab.methods.lrpet import plan_ranks
from prunelab.models import build_model
from prunelab.profile import profile
from prunelab.report.methods import color_for, is_known

from conftest import compose_config

R56 = ["model=resnet56"]


def test_the_record_shows_both_methods_and_the_counts_of_both_steps(tiny_cfg, tmp_path: Path) -> None:
    record = pipeline.run(tiny_cfg("method=svd", "method.pruner=nuclear", "method.pruner.ratio=0.5",
                                   "method.rank_ratio=0.5"), tmp_path / "run")
    assert record["method"] == "svd(nuclear)" and record["target"] == "g=0.5; ratio=0.5"
    assert record["extra"]["pruner"]["criterion"] == "nuclear" and len(record["extra"]["ranks"]) == 19  # ResNet-20: stem + 18
    plain = pipeline.run(tiny_cfg("method=nuclear", "method.ratio=0.5"), tmp_path / "plain")
    assert record["params"] < plain["params"] < record["base_params"]
    assert record["acc_compressed"] is not None and record["epochs_finetune"] == 1


def test_composed_counts_equal_the_two_steps_applied_by_hand() -> None:
    cfg = compose_config(["method=svd", "method@method.pruner=l1", "method.pruner.ratio=0.3", *R56])
    out = profile(cfg)
    torch.manual_seed(int(cfg.seed))
    dense = build_model(cfg.model, 10)
    data = SimpleNamespace(input_shape=(3, 32, 32))
    pruned = build_method(cfg.method.pruner).prepare(copy.deepcopy(dense), Context(data, torch.device("cpu"), 0))
    ranks = {p.name: p.rank for p in plan_ranks(pruned, (3, 32, 32), 0.5)}
    by_hand = count(factorise(pruned, ranks), (3, 32, 32))
    assert (out["params"], out["macs"]) == (by_hand.params, by_hand.macs)
    assert out["macs"] < profile(compose_config(["method=l1", "method.ratio=0.3", *R56]))["macs"]


def test_at_full_rank_the_factorisation_leaves_the_pruned_network_unchanged() -> None:
    cfg = compose_config(["method=svd", "method.rank_ratio=0", *R56, "model.widths=[4,8,16]"])
    torch.manual_seed(0)
    dense = build_model(cfg.model, 10).double().eval()
    data = SimpleNamespace(input_shape=(3, 16, 16))
    method = build_method(cfg.method)
    ctx = Context(data, torch.device("cpu"), 0)
    pruned = method.inner.prepare(copy.deepcopy(dense), ctx).eval()
    composed = method.prepare(copy.deepcopy(dense), ctx).eval()
    assert isinstance(composed.layer1[0].conv1, LowRankConv2d)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(composed(x), pruned(x), rtol=1e-10, atol=1e-10)


def test_the_inner_method_is_chosen_by_either_override_form_and_must_be_a_method() -> None:
    for form in ("method.pruner=taylor", "method@method.pruner=taylor"):
        assert build_method(compose_config(["method=svd", form]).method).label == "svd(taylor)"
    with pytest.raises(UserError, match="method.pruner='nosuch' is not a method config"):
        build_method(compose_config(["method=svd", "method.pruner=nosuch"]).method)


def test_report_labels_of_composed_methods() -> None:
    assert is_known("svd(l1)") and is_known("svd(svd(nuclear))") and not is_known("svd(nosuch)")
    assert not is_known("nosuch(l1)") and color_for("svd(l1)") == color_for("svd(l1)") != color_for("svd")
