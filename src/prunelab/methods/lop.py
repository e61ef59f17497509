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
from prunelab.errors import UserError, choose
from prunelab.layers.expanded import INITS, ExpandedConv2d, ExpandedLinear, init_expansion
from prunelab.methods.base import Composite, Context, register
from prunelab.models.features import FeatureTap, exact_surgery
from prunelab.models.structure import conv_bn_pairs
from prunelab.train.callbacks import Callback, TrainState
from prunelab.train.similarity import similarity_preserving_loss

SP_FEATURES = ("conv", "bn", "relu")
NON_DEFAULT_TARGET = {"noise": 0.1, "layers": ".*", "sp_layers": "all", "sp_feature": "conv"}  # named in the target if set
STAGE_OUTPUTS = r"^(layer\d+|features\.pool\d+)$"  # ResNet stages (ours, torchvision) and VGG's pooling stages


def expandable(model: nn.Module, pattern: str) -> list[str]:
    """Names of the ungrouped Conv2d and the Linear layers of `model` whose name matches `pattern`."""
    regex = re.compile(pattern)
    return [n for n, m in model.named_modules()
            if (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)) and regex.search(n)]


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
    """

    def __init__(self, teacher: nn.Module, pairs: list[tuple[str, str]], gamma: float, relu: bool = False) -> None:
        self.teacher, self.pairs, self.gamma, self.relu = teacher, pairs, gamma, relu
        self.tap: FeatureTap | None = None

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
        return self.gamma * torch.stack(losses).mean()


@register("lop")
class LinearOverparam(Composite):
    """Expand the pruner's model, fine-tune with SP distillation, contract (module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        if isinstance(cfg.expand, bool) or not isinstance(cfg.expand, int) or cfg.expand < 0:
            raise UserError(f"method.expand={cfg.expand!r}: give the expansion ratio E >= 1 (0: no expansion)")
        if float(cfg.gamma) < 0:
            raise UserError(f"method.gamma={cfg.gamma} must be >= 0 (0: no distillation)")
        self.init = choose("method.init", str(cfg.init), list(INITS))
        self.feature = choose("method.sp_feature", str(cfg.sp_feature), list(SP_FEATURES))
        if self.feature != "conv" and cfg.sp_layers != "all":
            raise UserError(f"method.sp_feature={self.feature} chooses the feature of each expanded layer: it needs "
                            f"method.sp_layers=all (with sp_layers={cfg.sp_layers} the named modules' outputs are used)")
        if self.init == "pinv" and cfg.expand and not float(cfg.noise) > 0:
            raise UserError(f"method.noise={cfg.noise} must be > 0 with method.init=pinv: without null-space noise the "
                            "extra width never trains (as with init=orthonormal)")
        for key in ("layers", "sp_layers"):
            try:
                re.compile(STAGE_OUTPUTS if cfg[key] == "stages" else str(cfg[key]))
            except re.error as err:
                raise UserError(f"method.{key}={cfg[key]!r} is not a regular expression ({err})") from None
        self.expanded: list[str] = []

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
        options = [f"{key}={self.cfg[key]}" for key, default in NON_DEFAULT_TARGET.items()
                   if self.cfg[key] != default and (key != "noise" or (self.cfg.expand and self.init == "pinv"))]
        return "; ".join([expansion, f"gamma={float(self.cfg.gamma):g}", *options])

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        model = super().prepare(model, ctx)
        if self.cfg.expand:
            self.expanded = expandable(model, str(self.cfg.layers))
            if not self.expanded:
                raise UserError(f"method.layers={self.cfg.layers!r} matches no ungrouped conv or Linear layer of "
                                f"the pruned {ctx.model_name}: give a regular expression of its module names")
            model = expand(model, self.expanded, int(self.cfg.expand), self.init, ctx.seed, float(self.cfg.noise))
        ctx.extra.update(expanded_layers=len(self.expanded), expand=int(self.cfg.expand), gamma=float(self.cfg.gamma))
        return model

    def sp_pairs(self, ctx: Context) -> list[tuple[str, str]]:
        """(student, teacher) module names whose features are compared (same names: pruning keeps them)."""
        teacher = ctx.teacher
        names = dict(teacher.named_modules())
        if self.cfg.sp_layers == "all":
            layers = self.expanded or expandable(teacher, str(self.cfg.layers))
            if self.feature == "conv":
                return [(n, n) for n in layers if n in names]
            bns = conv_bn_pairs(teacher, tuple(ctx.data.input_shape))
            return [(bns[n], bns[n]) for n in layers if n in bns]
        pattern = re.compile(STAGE_OUTPUTS if self.cfg.sp_layers == "stages" else str(self.cfg.sp_layers))
        return [(n, n) for n in names if n and pattern.search(n)]

    def callbacks(self, ctx: Context) -> list[Callback]:
        if not float(self.cfg.gamma):
            return []
        if ctx.teacher is None:
            raise UserError("method.gamma > 0 distils from the dense model: run with a baseline (baseline.skip=false)")
        pairs = self.sp_pairs(ctx)
        if not pairs:
            raise UserError(f"method.sp_layers={self.cfg.sp_layers!r} (sp_feature={self.feature}) pairs no layer of "
                            "the student with the dense teacher: choose all, stages or a regex of module names")
        ctx.extra.update(sp_pairs=len(pairs), sp_feature=self.feature)
        return [SimilarityDistillation(ctx.teacher, pairs, float(self.cfg.gamma), relu=self.feature == "relu")]

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Contract every block, checked by `exact_surgery` (`extra.contraction_error`: the relative change of the
        logits on random images; above 1e-4 the run stops)."""
        model, ctx.extra["contraction_error"] = exact_surgery(model, tuple(ctx.data.input_shape), contract_all,
                                                              "contracting the expanded layers")
        return super().finalize(model, ctx)

    def profile_extra(self, ctx: Context) -> dict[str, Any]:
        return {"expanded_layers": len(self.expanded)}
