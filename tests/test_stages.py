"""Stages, parameter groups, frozen parts, optimizers and callbacks (docs/design.md, "Stage", "Callback")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from prunelab import pipeline
from prunelab.data import build_dataset
from prunelab.errors import UserError
from prunelab.layers.lowrank import LowRankConv2d, factorise
from prunelab.methods.base import METHODS, Method, register
from prunelab.models import build_model
from prunelab.record import Mirror
from prunelab.train import checkpoint as ckpt
from prunelab.train.callbacks import Callback, TrainState
from prunelab.train.loop import fit
from prunelab.train.stage import ParamGroup, Stage, no_decay_parameters

CPU = torch.device("cpu")


def tiny_model_and_data(tiny_cfg, *overrides: str):
    cfg = tiny_cfg(*overrides)
    data = build_dataset(cfg.dataset, CPU)
    torch.manual_seed(0)
    return cfg, build_model(cfg.model, data.num_classes), data


def recipe(cfg, **changes):
    return OmegaConf.merge(cfg.trainer, changes)


class Recorder(Callback):
    """Reads back the optimizer's groups after every step and counts the hooks called."""

    def __init__(self) -> None:
        self.groups: list[list[tuple[float, float]]] = []
        self.after_backward = 0

    def on_after_backward(self, state: TrainState) -> None:
        self.after_backward += 1

    def on_step_end(self, state: TrainState) -> None:
        self.groups.append([(g["lr"], g["weight_decay"]) for g in state.optimizer.param_groups])


def test_param_groups_get_their_lr_scale_and_weight_decay(tiny_cfg) -> None:
    cfg, model, data = tiny_model_and_data(tiny_cfg, "trainer.lr=0.05", "trainer.weight_decay=1e-3")
    bn = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    recorder = Recorder()
    groups = lambda m: [ParamGroup(convs), ParamGroup(bn, lr_scale=0.1, weight_decay=0.0)]  # noqa: E731
    fit(model, data, Stage("finetune", cfg.trainer, param_groups=groups, callbacks=[recorder]), device=CPU, seed=0)
    assert recorder.groups[0] == [(0.05, 1e-3), (pytest.approx(0.005), 0.0)]
    assert recorder.after_backward == len(recorder.groups) == 2


def test_recipe_can_exempt_batchnorm_and_biases_from_weight_decay(tiny_cfg) -> None:
    cfg, model, data = tiny_model_and_data(tiny_cfg, "trainer.decay_bn_and_bias=false")
    groups = Stage("finetune", cfg.trainer).groups(model)
    plain = no_decay_parameters(model)
    assert [g.weight_decay for g in groups] == [None, 0.0]
    assert {id(p) for p in groups[1].params} == plain and model.fc.bias is not None and id(model.fc.bias) in plain
    assert len(groups[0].params) + len(groups[1].params) == len(list(model.parameters()))


def test_parameters_outside_every_group_are_frozen_and_their_batchnorms_keep_statistics(tiny_cfg) -> None:
    cfg, model, data = tiny_model_and_data(tiny_cfg, "trainer.epochs=2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stage = Stage("head", cfg.trainer, param_groups=lambda m: [ParamGroup(list(m.fc.parameters()))])
    fit(model, data, stage, device=CPU, seed=0)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # running means, variances and batch counts included
    assert all(p.requires_grad for p in model.parameters())  # flags restored after the stage


def test_optimizers_are_chosen_by_the_recipe(tiny_cfg) -> None:
    cfg, model, data = tiny_model_and_data(tiny_cfg)
    seen = {}

    class Grab(Callback):
        def on_fit_start(self, state: TrainState) -> None:
            seen["optimizer"] = state.optimizer

    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        fit(model, data, Stage("s", recipe(cfg, optimizer=name, betas=[0.8, 0.9], eps=1e-6), callbacks=[Grab()]),
            device=CPU, seed=0)
        group = seen["optimizer"].param_groups[0]
        assert type(seen["optimizer"]) is cls and group["betas"] == (0.8, 0.9) and group["eps"] == 1e-6
    with pytest.raises(UserError, match="unknown trainer.optimizer 'lion'"):
        fit(model, data, Stage("s", recipe(cfg, optimizer="lion")), device=CPU, seed=0)


def test_a_gradient_mask_in_on_after_backward_keeps_masked_weights(tiny_cfg) -> None:
    cfg, model, data = tiny_model_and_data(tiny_cfg, "trainer.weight_decay=0")
    conv = model.conv1
    before = conv.weight.detach().clone()

    class Mask(Callback):
        def on_after_backward(self, state: TrainState) -> None:
            conv.weight.grad[:2] = 0

    fit(model, data, Stage("s", cfg.trainer, callbacks=[Mask()]), device=CPU, seed=0)
    assert torch.equal(conv.weight[:2], before[:2]) and not torch.equal(conv.weight[2:], before[2:])


class StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, state: TrainState) -> None:
        state.stop = state.epoch + 1 >= self.epochs


def test_early_stop_ends_the_stage_and_a_resumed_run_does_not_train_it_again(tiny_cfg, tmp_path: Path) -> None:
    cfg, model, data = tiny_model_and_data(tiny_cfg, "trainer.epochs=4")
    stage = Stage("s", cfg.trainer, callbacks=[StopAfter(2)])
    result = fit(model, data, stage, device=CPU, seed=0, checkpoint=tmp_path / "s.pt")
    assert (result.epochs, result.stopped, len(result.history)) == (2, True, 2)
    stage = Stage("s", cfg.trainer, callbacks=[StopAfter(2)])
    again = fit(model, data, stage, device=CPU, seed=0, checkpoint=tmp_path / "s.pt", resume=True)
    assert (again.epochs, again.stopped, again.acc_final) == (2, True, result.acc_final)


@register("test_three_stages")
class ThreeStages(Method):
    """A toy method: the head alone, then (factorised) everything with SGD, then everything with Adam."""

    def stages(self, ctx):
        return [
            Stage("head", ctx.trainer, param_groups=lambda m: [ParamGroup(list(m.fc.parameters()))]),
            Stage("factorised", ctx.trainer, setup=lambda m: factorise(m, {"layer1.0.conv1": 2})),
            Stage("adam", OmegaConf.merge(ctx.trainer, {"optimizer": "adam", "lr": 1e-3})),
        ]


def test_resume_inside_stage_two_of_three_equals_an_uninterrupted_run(tiny_cfg, tmp_path: Path, monkeypatch) -> None:
    def config(checkpoints: str):
        cfg = tiny_cfg("method=dense", "trainer.epochs=2", f"paths.baselines={tmp_path}/shared",
                       f"paths.checkpoints={tmp_path}/{checkpoints}")
        cfg.method.kind, cfg.method.name = "test_three_stages", "dense"
        return cfg

    logged: list[tuple[int, list[str]]] = []

    class Recording(Mirror):
        def log(self, metrics, step):
            logged.append((step, sorted(metrics)))

    monkeypatch.setattr(pipeline, "open_mirror", lambda *a, **k: Recording())
    whole = pipeline.run(config("c1"), tmp_path / "whole")
    assert [step for step, _ in logged] == [1, 2, 3, 4, 5, 6]  # W&B steps increase over the stages
    assert [keys[0].split("/")[0] for _, keys in logged] == ["head", "head", "factorised", "factorised", "adam", "adam"]
    real_save, saves = ckpt.save_atomic, []

    def killed_in_the_second_epoch_of_stage_two(path, payload):
        if payload.get("phase") == "factorised" and any(p.name == "factorised.pt" for p in saves):
            raise KeyboardInterrupt
        saves.append(path)
        real_save(path, payload)

    monkeypatch.setattr(ckpt, "save_atomic", killed_in_the_second_epoch_of_stage_two)
    killed = config("c2")
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(killed, tmp_path / "killed")
    monkeypatch.setattr(ckpt, "save_atomic", real_save)
    killed.resume = True
    resumed = pipeline.run(killed, tmp_path / "resumed")
    for key in ("acc_final", "acc_best", "acc_compressed", "params", "macs", "epochs_finetune", "recipe"):
        assert resumed[key] == whole[key], key
    assert resumed["epochs_finetune"] == 6
    a, b = (ckpt.load(tmp_path / run / "model.pt")["model"] for run in ("whole", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(ckpt.load_model(tmp_path / "resumed" / "model.pt").layer1[0].conv1, LowRankConv2d)
    whole_rows, rows = ([line.split(",")[:-1] for line in (tmp_path / run / "history.csv").read_text().splitlines()]
                        for run in ("whole", "resumed"))  # all but the epoch's wall time
    assert rows == whole_rows and [r[:2] for r in rows[1:]] == [[s, e] for s in ("head", "factorised", "adam")
                                                               for e in ("1", "2")]


def test_stage_names_must_be_unique(tiny_cfg, tmp_path: Path) -> None:
    @register("test_twins")
    class Twins(Method):
        def stages(self, ctx):
            return [Stage("same", ctx.trainer), Stage("same", ctx.trainer)]

    cfg = tiny_cfg("method=dense")
    cfg.method.kind = "test_twins"
    try:
        with pytest.raises(ValueError, match="stage names must be unique"):
            pipeline.run(cfg, tmp_path / "run")
    finally:
        METHODS.pop("test_twins")
