"""`method=lop`: linear over-parameterization of a pruned network, with similarity-preserving distillation.

"Boosting Pruned Networks with Linear Over-parameterization" (arXiv:2204.11444; v1 "Fine-tuning Pruned
Networks with Linear Over-parameterization"); docs/papers/linear_overparam.md.  Only the abstracts were
available: the recipe below is our reconstruction, every choice a key of conf/method/lop.yaml.

    prepare   the inner pruner (`method.pruner`, any channel pruner) prunes the dense model; every conv
              and Linear layer matching `method.layers` (default: all, stem, 1x1 shortcuts and the
              classifier included; grouped convs are skipped) becomes an `ExpandedConv2d` /
              `ExpandedLinear` with ratio `method.expand` (1x1 -> k x k -> 1x1, no bias, BN or activation
              inside; the BN after the layer stays), initialised to compute exactly the pruned layer
              (`method.init`: pinv + null-space noise, or the degenerate orthonormal one) (§2.2-2.5).
              `method.expand=0` keeps the pruned layers as they are (the "SP-KD only" ablation).
    stage     fine-tuning with the run's trainer, loss = cross-entropy + gamma x the mean over the chosen
              layers of the similarity-preserving loss between the student's feature and the same layer's
              of the frozen dense teacher (`method.gamma`, `method.sp_layers`, `method.sp_feature`, §3);
              the teacher runs without gradients in the same autocast.
    finalize  every block contracts back into one layer of the pruned shape (exact), then the pruner's
              finalize: the model has the pruned architecture, its counts and its `model.pt` format.

With `expand=0` and `gamma=0` nothing is added: the run is plain fine-tuning of the pruner's model and is
labelled with the pruner alone (`l1`), as `method=l1` would be; otherwise `lop(l1)`.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from prunelab.data.sharding import generator
from prunelab.errors import UserError
from prunelab.layers.expanded import ExpandedConv2d, ExpandedLinear, init_expansion
from prunelab.methods.base import Composite, Context, register
from prunelab.methods.lop_steps import (
    ContractedStep, first_step_directions, first_step_lr, loss_gradients, matching_scale, step_ratio,
)
from prunelab.models.features import FeatureTap, exact_surgery
from prunelab.models.structure import conv_bn_pairs
from prunelab.train.callbacks import Callback, TrainState
from prunelab.train.similarity import similarity_preserving_loss
from prunelab.train.stage import ParamGroup, Stage, recipe_groups

SP_FEATURES = ("conv", "bn", "relu")
# options named in the target when they differ from these values (those of the expanded factors only with expand > 0)
NON_DEFAULT_TARGET = {"noise": 0.1, "layers": ".*", "head": True, "lr_match": True, "factor_lr_scale": 1.0,
                      "factor_decay": None, "sp_layers": "all", "sp_feature": "conv", "sp_logits": False}
FACTOR_OPTIONS = ("noise", "head", "lr_match", "factor_lr_scale", "factor_decay")
STAGE_OUTPUTS = r"^(layer\d+|features\.pool\d+)$"  # ResNet stages (ours, torchvision) and VGG's pooling stages


def expandable(model: nn.Module, pattern: str, head: bool = True) -> list[str]:
    """Names of the ungrouped Conv2d and the Linear layers of `model` whose name matches `pattern`, the
    classifier (`head_name`) only with `head`."""
    regex, last = re.compile(pattern), head_name(model)
    return [n for n, m in model.named_modules()
            if (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)) and regex.search(n)
            and (head or n != last)]


def head_name(model: nn.Module) -> str | None:
    """The classifier: the last Linear layer of `model` in module order (its output is the logits)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


@torch.no_grad()
def expand(model: nn.Module, names: list[str], ratio: int, how: str, seed: int, noise: float = 0.1) -> nn.Module:
    """Replace each named layer by its output-preserving expansion, in place; each layer's init has its own
    generator (seed, name), so it does not depend on which other layers are expanded."""
    for name in names:
        layer = model.get_submodule(name)
        block = (ExpandedLinear if isinstance(layer, nn.Linear) else ExpandedConv2d).like(layer, ratio)
        init_expansion(block, layer.weight, generator(seed, "expand", name), how, noise)
        if layer.bias is not None:
            block.c.bias.copy_(layer.bias)
        model.set_submodule(name, block.train(layer.training))
    return model


def contract_all(model: nn.Module) -> nn.Module:
    """Replace every expanded block of `model` by its contraction, in place."""
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, (ExpandedConv2d, ExpandedLinear))]:
        model.set_submodule(name, m.contract())
    return model


class SimilarityDistillation(Callback):
    """gamma x mean over `pairs` of L_SP(student feature, teacher feature) as an extra loss (§3).

    `pairs`: (student module, teacher module) names; with `relu`, the ReLU of the tapped output is compared.
    The student tap lives for the stage (registered before compilation); the teacher runs under no_grad with a
    tap of its own for each step, so nothing of its graph is kept.

    Given `extra`, over the first epoch it also measures how strongly the term pulls (§3): per step, the norm of its gradient
    over the trained parameters against the norm of the rest of the loss's (cross-entropy), and the ratio of
    the two loss values; their means land in `extra` as `sp_grad_ratio` and `sp_loss_ratio` (one extra
    backward pass per step of that epoch).
    """

    def __init__(self, teacher: nn.Module, pairs: list[tuple[str, str]], gamma: float, relu: bool = False,
                 extra: dict[str, Any] | None = None) -> None:
        self.teacher, self.pairs, self.gamma, self.relu = teacher, pairs, gamma, relu
        self.tap: FeatureTap | None = None
        self.extra = extra  # None: no measurement
        self.sums = {"grad_ratio": 0.0, "loss_ratio": 0.0, "steps": 0}
        self.sp_grads: list[torch.Tensor | None] | None = None

    def on_fit_start(self, state: TrainState) -> None:
        self.tap = FeatureTap(state.model, dict.fromkeys(s for s, _ in self.pairs))

    def on_fit_end(self, state: TrainState) -> None:
        if self.tap is not None:
            self.tap.remove()
        self.tap = None

    def extra_loss(self, state: TrainState, images: torch.Tensor, labels: torch.Tensor,
                   logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), FeatureTap(self.teacher, dict.fromkeys(t for _, t in self.pairs)) as teacher_tap:
            self.teacher(images)
            teacher = dict(teacher_tap.outputs)
        act = F.relu if self.relu else (lambda t: t)
        losses = [similarity_preserving_loss(act(self.tap.outputs[s]), act(teacher[t])) for s, t in self.pairs]
        loss = self.gamma * torch.stack(losses).mean()
        if self.extra is not None and state.epoch == 0 and torch.is_grad_enabled():
            params = _trained(state)
            self.sp_grads = list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))
            ce = float(F.cross_entropy(logits.detach().float(), labels))
            self.sums["loss_ratio"] += float(loss.detach()) / max(ce, 1e-12)
        return loss

    def on_after_backward(self, state: TrainState) -> None:
        if self.sp_grads is None:
            return
        sp_sq = rest_sq = 0.0
        for p, sp in zip(_trained(state), self.sp_grads, strict=True):
            total = p.grad if p.grad is not None else torch.zeros_like(p)
            sp = torch.zeros_like(p) if sp is None else sp
            sp_sq += float(sp.double().square().sum())
            rest_sq += float((total - sp).double().square().sum())
        self.sums["grad_ratio"] += (sp_sq / max(rest_sq, 1e-300)) ** 0.5
        self.sums["steps"] += 1
        self.sp_grads = None

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch == 0:
            self._report()

    def _report(self) -> None:
        steps = self.sums["steps"]
        if steps and self.extra is not None:
            self.extra.update(sp_grad_ratio=self.sums["grad_ratio"] / steps, sp_loss_ratio=self.sums["loss_ratio"] / steps)

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = dict(state["sums"])
        self._report()


def _trained(state: TrainState) -> list[torch.Tensor]:
    """The parameters the stage trains, in the optimizer's order."""
    return [p for group in state.optimizer.param_groups for p in group["params"] if p.requires_grad]


@register("lop")
class LinearOverparam(Composite):
    """Expand the pruner's model, fine-tune with SP distillation, contract (module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        """Single keys are checked by prunelab.validate; here the keys that go together."""
        super().__init__(cfg)
        self.init, self.feature = str(cfg.init), str(cfg.sp_feature)
        if self.feature != "conv" and cfg.sp_layers != "all":
            raise UserError(f"method.sp_feature={self.feature} chooses the feature of each expanded layer: it needs "
                            f"method.sp_layers=all (with sp_layers={cfg.sp_layers} the named modules' outputs are used)")
        if self.init != "orthonormal" and cfg.expand and not float(cfg.noise) > 0:
            raise UserError(f"method.noise={cfg.noise} must be > 0 with method.init={self.init}: without null-space "
                            "noise the extra width never trains (as with init=orthonormal)")
        if self.init == "pinv" and cfg.expand == 1:
            raise UserError("method.expand=1 with method.init=pinv: a square Gaussian factor is near-singular (its "
                            "first steps are hundreds of times the plain layer's): use method.init=orthonormal_noise "
                            "or method.expand >= 2")
        self.expanded: list[str] = []
        self.lr_scales: dict[str, float] = {}
        self.recipe: Any = {}

    @property
    def active(self) -> bool:
        return bool(self.cfg.expand) or float(self.cfg.gamma) > 0

    @property
    def label(self) -> str:
        return super().label if self.active else self.inner.label

    @property
    def own_target(self) -> str:
        if not self.active:
            return ""
        expansion = f"E={self.cfg.expand}" + ("" if self.init == "pinv" else f",{self.init}") if self.cfg.expand \
            else "E=off"
        shown = {key for key in NON_DEFAULT_TARGET if key not in FACTOR_OPTIONS or self.cfg.expand}
        if self.init == "orthonormal":
            shown.discard("noise")
        options = [f"{key}={self.cfg[key]}" for key, default in NON_DEFAULT_TARGET.items()
                   if key in shown and self.cfg[key] != default]
        return "; ".join([expansion, f"gamma={float(self.cfg.gamma):g}", *options])

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        model = super().prepare(model, ctx)
        self.recipe = ctx.trainer
        if self.cfg.expand:
            self.expanded = expandable(model, str(self.cfg.layers), bool(self.cfg.head))
            if not self.expanded:
                raise UserError(f"method.layers={self.cfg.layers!r} matches no ungrouped conv or Linear layer of "
                                f"the pruned {ctx.model_name}: give a regular expression of its module names")
            if self.cfg.lr_match and str(ctx.trainer["optimizer"]) != "sgd":
                raise UserError(f"method.lr_match=true matches the first SGD step; trainer.optimizer="
                                f"{ctx.trainer['optimizer']}: set method.lr_match=false or trainer.optimizer=sgd")
            images, labels = first_batch(ctx)
            smoothing = float(ctx.trainer["label_smoothing"])
            plain = loss_gradients(model, images, labels, smoothing)
            weights = {name: model.get_submodule(name).weight.detach().clone() for name in self.expanded}
            model = expand(model, self.expanded, int(self.cfg.expand), self.init, ctx.seed, float(self.cfg.noise))
            factors = loss_gradients(model, images, labels, smoothing)
            self._set_lr_scales(model, weights, plain, factors, ctx)
        ctx.extra.update(expanded_layers=len(self.expanded), expand=int(self.cfg.expand), gamma=float(self.cfg.gamma))
        return model

    def _set_lr_scales(self, model: nn.Module, weights: dict[str, torch.Tensor], plain: dict[str, torch.Tensor],
                       factors: dict[str, torch.Tensor], ctx: Context) -> None:
        """Each expanded layer's factor lr scale (`method.factor_lr_scale`, times the scale that matches its first
        contracted step to the plain layer's with `method.lr_match`), and the step ratios before and after (§2.8)."""
        lr, decay = first_step_lr(ctx.trainer), float(ctx.trainer["weight_decay"])
        factor_decay = decay if self.cfg.factor_decay is None else float(self.cfg.factor_decay)
        measured, used = {}, {}
        for name in self.expanded:
            block = model.get_submodule(name)
            plain_step = plain[f"{name}.weight"] + decay * weights[name]
            step = first_step_directions(
                [(f"{name}.{part}.weight", getattr(block, part).weight) for part in "abc"], factors, factor_decay)
            directions = block.factor_views(*(step[f"{name}.{part}.weight"] for part in "abc"))
            step, plain_norm = ContractedStep.of(block.factors(), directions), float(plain_step.double().norm())
            scale = float(self.cfg.factor_lr_scale)
            if self.cfg.lr_match:
                scale *= matching_scale(step, plain_norm, lr)
            self.lr_scales[name] = scale
            measured[name] = step_ratio(step, plain_norm, lr)
            used[name] = step_ratio(step, plain_norm, lr, scale)
        ctx.extra.update(step_ratio=measured, step_ratio_used=used, factor_lr_scale=self.lr_scales,
                         factor_decay=factor_decay)

    def stages(self, ctx: Context) -> list[Stage]:
        groups = self.factor_groups if self.expanded else None
        return [Stage(self.phase, ctx.trainer, param_groups=groups, callbacks=self.callbacks(ctx))]

    def factor_groups(self, model: nn.Module) -> list[ParamGroup]:
        """The recipe's groups for every parameter outside the factors, then one group per expanded layer: its A,
        B and C at that layer's lr scale with `method.factor_decay` (null: the recipe's; it penalises
        ||A||^2 + ||B||^2 + ||C||^2, not ||W||^2, §6.9)."""
        decay = None if self.cfg.factor_decay is None else float(self.cfg.factor_decay)
        blocks = {name: model.get_submodule(name) for name in self.expanded}
        factors = {name: [b.a.weight, b.b.weight, b.c.weight] for name, b in blocks.items()}
        ids = {id(p) for params in factors.values() for p in params}
        rest = [ParamGroup([p for p in g.params if id(p) not in ids], g.lr_scale, g.weight_decay)
                for g in recipe_groups(model, self.recipe)]
        return [*rest, *(ParamGroup(params, self.lr_scales[name], decay) for name, params in factors.items())]

    def sp_pairs(self, ctx: Context) -> list[tuple[str, str]]:
        """(student, teacher) module names whose features are compared (same names: pruning keeps them); the
        classifier's logits only with `method.sp_logits`."""
        teacher = ctx.teacher
        names = dict(teacher.named_modules())
        if self.cfg.sp_layers == "all":
            layers = self.expanded or expandable(teacher, str(self.cfg.layers), bool(self.cfg.head))
            if self.feature == "conv":
                pairs = [(n, n) for n in layers if n in names]
            else:
                bns = conv_bn_pairs(teacher, tuple(ctx.data.input_shape))
                pairs = [(bns[n], bns[n]) for n in layers if n in bns]
        else:
            pattern = re.compile(STAGE_OUTPUTS if self.cfg.sp_layers == "stages" else str(self.cfg.sp_layers))
            pairs = [(n, n) for n in names if n and pattern.search(n)]
        logits = head_name(teacher)
        return pairs if self.cfg.sp_logits else [(s, t) for s, t in pairs if t != logits]

    def callbacks(self, ctx: Context) -> list[Callback]:
        if not float(self.cfg.gamma):
            return []
        if ctx.teacher is None:
            raise UserError("method.gamma > 0 distils from the dense model: run with a baseline (baseline.skip=false)")
        pairs = self.sp_pairs(ctx)
        if not pairs:
            raise UserError(f"method.sp_layers={self.cfg.sp_layers!r} (sp_feature={self.feature}, sp_logits="
                            f"{self.cfg.sp_logits}) pairs no layer of the student with the dense teacher: choose all, "
                            "stages or a regex of module names")
        ctx.extra.update(sp_pairs=len(pairs), sp_feature=self.feature)
        return [SimilarityDistillation(ctx.teacher, pairs, float(self.cfg.gamma), relu=self.feature == "relu",
                                       extra=ctx.extra)]

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Contract every block, checked by `exact_surgery` (`extra.contraction_error`: the relative change of the
        logits on random images; above 1e-4 the run stops)."""
        model, ctx.extra["contraction_error"] = exact_surgery(model, tuple(ctx.data.input_shape), contract_all,
                                                              "contracting the expanded layers")
        return super().finalize(model, ctx)

    def profile_extra(self, ctx: Context) -> dict[str, Any]:
        return {"expanded_layers": len(self.expanded)}


def first_batch(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """The first training batch of the run (the recipe's batch size, the run's seed, epoch 0): the batch the
    first optimizer step of fine-tuning sees."""
    loader = ctx.data.loader("train", int(ctx.trainer["batch_size"]), train=True, seed=ctx.seed)
    loader.set_epoch(0)
    images, labels = next(iter(loader))
    return images.to(ctx.device), labels.to(ctx.device)

