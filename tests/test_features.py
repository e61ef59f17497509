"""The one feature tap (models/features.py): manual-hook equality, output replacement, modes, torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunelab import pipeline
from prunelab.methods.base import METHODS, Method, register
from prunelab.models import build_model
from prunelab.models.features import FeatureTap, eval_mode
from prunelab.train.callbacks import Callback, TrainState

NAMES = ["layer1.0.relu2", "layer2.1.bn1", "fc"]


def resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model({"arch": "cifar_resnet", "name": "r20", "depth": 20, "widths": [4, 8, 16]}, 10).eval()


def test_a_tap_sees_what_a_manual_forward_hook_sees() -> None:
    model, x = resnet(), torch.randn(3, 3, 8, 8)
    manual, handles = {}, []
    for name in NAMES:
        handles.append(model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: manual.__setitem__(name, out.clone())))
    with FeatureTap(model, NAMES) as tap:
        logits = model(x)
        assert tap.outputs.keys() == set(NAMES)
        assert all(torch.equal(tap.outputs[n], manual[n]) for n in NAMES)
        assert torch.equal(tap.outputs["fc"], logits)
    for h in handles:
        h.remove()
    assert not tap.outputs and all(not model.get_submodule(n)._forward_hooks for n in NAMES)  # removed on exit


def test_a_tap_function_can_replace_a_module_output() -> None:
    model, x = resnet(), torch.randn(2, 3, 8, 8)
    seen = []

    def zero_fc(name, module, inputs, output):
        seen.append((name, tuple(inputs[0].shape)))
        return torch.zeros_like(output)

    with FeatureTap(model, ["fc"], zero_fc):
        assert torch.equal(model(x), torch.zeros(2, 10))
    assert seen == [("fc", (2, 16))] and model(x).abs().sum() > 0


def test_eval_mode_restores_every_module_own_mode() -> None:
    model = resnet().train()
    model.bn1.eval()  # a frozen BatchNorm
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert not model.bn1.training and model.layer1[0].bn1.training and model.training


MADE: list[TeacherMatch] = []


@register("test_feature_match")
class FeatureMatch(Method):
    """Fine-tunes with an extra loss: the squared distance of a block output to the dense teacher's."""

    def callbacks(self, ctx):
        MADE.append(TeacherMatch(ctx.teacher))
        return [MADE[-1]]


class TeacherMatch(Callback):
    LAYER = "layer2.0.relu2"

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher, self.losses = teacher, []

    def on_fit_start(self, state: TrainState) -> None:
        self.student_tap = FeatureTap(state.model, [self.LAYER])
        self.teacher_tap = FeatureTap(self.teacher, [self.LAYER])

    def extra_loss(self, state, images, labels, logits):
        with torch.no_grad():
            self.teacher(images)
        loss = F.mse_loss(self.student_tap.outputs[self.LAYER], self.teacher_tap.outputs[self.LAYER])
        self.losses.append(float(loss.detach()))
        return loss


def test_distillation_from_taps_of_student_and_teacher_works_compiled(tiny_cfg, tmp_path: Path) -> None:
    records = {}
    for compiled in (False, True):
        cfg = tiny_cfg("method=dense", f"trainer.compile={str(compiled).lower()}")
        cfg.method.kind = "test_feature_match"
        records[compiled] = pipeline.run(cfg, tmp_path / f"run-{compiled}")
    eager, compiled = MADE[-2].losses, MADE[-1].losses
    assert len(eager) == len(compiled) == 2 and all(0 < v < float("inf") for v in eager)
    assert compiled == pytest.approx(eager, rel=1e-4)  # the compiled graph fills the taps with the same maps
    assert records[True]["acc_final"] == records[False]["acc_final"]


def teardown_module() -> None:
    METHODS.pop("test_feature_match", None)
