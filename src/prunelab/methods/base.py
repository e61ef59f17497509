"""The method contract (docs/design.md, "Method").

A method turns a (dense, trained or freshly initialised) model into a compressed one:

    model = method.prepare(model, ctx)        # e.g. score and remove channels, swap layers
    for stage in method.stages(ctx):          # fine-tune, train from scratch, train some parts only
        fit(model, stage)
    model = method.finalize(model, ctx)       # e.g. export low-rank factors (exact)

The default `stages` is one stage named "finetune" ("scratch" for methods that train from
scratch) with the run's `trainer` recipe, the method's `param_groups(model)` (None: every
parameter) and its `callbacks(ctx)`; a method with several stages overrides `stages`.

Composition by delegation: a `Composite` holds another method under a config key (filled by
Hydra defaults, e.g. `/method@pruner: l1` in conf/method/svd.yaml), prepares with it first,
finalizes with it last, and records as `outer(inner)`.

Methods register themselves by `kind` (the `method.kind` config key); a method config file
under conf/method/ picks a kind and sets its options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from prunelab.budget import Target
from prunelab.data.base import Dataset
from prunelab.train.callbacks import Callback
from prunelab.train.stage import ParamGroup, Stage


@dataclass
class Context:
    """What a method may use besides the model."""

    data: Dataset  # for activation-based scores (train split), selection (val split) and evaluation
    device: torch.device
    seed: int
    trainer: Mapping[str, Any] = field(default_factory=dict)  # the run's method-phase recipe (cfg.trainer)
    teacher: nn.Module | None = None  # the trained dense model, eval mode (None without a baseline)
    model_name: str = ""
    run_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # numbers the method reports (-> record "extra")
    budget: Target | None = None  # a budget the method meets by itself (prunelab.budget.target)


class Method:
    """Base class; the defaults describe a method that changes nothing and fine-tunes everything."""

    trains_from_scratch: bool = False  # True: the method's model starts from a fresh init

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    @property
    def label(self) -> str:
        """Name in result tables."""
        return str(self.cfg.name)

    @property
    def target(self) -> str:
        """The compression target as configured, for the record."""
        return ""

    @property
    def phase(self) -> str:
        """Name of the default stage (history phase, checkpoint)."""
        return "scratch" if self.trains_from_scratch else "finetune"

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        return model

    def stages(self, ctx: Context) -> list[Stage]:
        return [Stage(self.phase, ctx.trainer, param_groups=self.param_groups, callbacks=self.callbacks(ctx))]

    param_groups: Callable[[nn.Module], list[ParamGroup]] | None = None  # the default stage's groups (None: all)

    def callbacks(self, ctx: Context) -> list[Callback]:
        """Callbacks of the default stage."""
        return []

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        return model

    def anticipate(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Profile only: the structure training would reach, estimated without training, before `finalize`
        (default: the model as it is; e.g. `method=cst` applies a uniform allocation of its rate)."""
        return model

    def profile_extra(self, ctx: Context) -> dict[str, Any]:
        """Numbers `python -m prunelab.profile` prints beside the costs (after prepare and finalize)."""
        return {}


class Composite(Method):
    """A method that delegates to an inner method held under `cfg[inner_key]` (composition by delegation).

    `prepare` runs the inner method's prepare (a subclass adds its own step after it), `finalize`
    the inner one's last (a subclass runs its own before it); the inner method reports into
    `extra[inner_key]`.  The label is `outer(inner)`, the target joins both targets with "; ".
    """

    inner_key = "pruner"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.inner = _instantiate(cfg[self.inner_key])  # checked with this method's config (`build_method`)
        self.trains_from_scratch = self.inner.trains_from_scratch

    @property
    def label(self) -> str:
        return f"{self.cfg.name}({self.inner.label})"

    @property
    def target(self) -> str:
        return "; ".join(t for t in (self.own_target, self.inner.target) if t)

    @property
    def own_target(self) -> str:
        """The outer method's part of the target."""
        return ""

    def inner_context(self, ctx: Context) -> Context:
        """`ctx` whose `extra` is the inner method's own sub-dict."""
        return replace(ctx, extra=ctx.extra.setdefault(self.inner_key, {}))

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        return self.inner.prepare(model, self.inner_context(ctx))

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        model = self.inner.finalize(model, self.inner_context(ctx))
        if "budget" in ctx.extra[self.inner_key]:  # the budget the inner method met is the run's (lop, svd)
            ctx.extra.setdefault("budget", ctx.extra[self.inner_key]["budget"])
        return model


METHODS: dict[str, type[Method]] = {}


def register(kind: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a Method available as `method.kind: <kind>`."""

    def add(cls: type[Method]) -> type[Method]:
        METHODS[kind] = cls
        return cls

    return add


def build_method(cfg: Mapping[str, Any], key: str = "method") -> Method:
    """Instantiate the method named by `cfg.kind`, after checking its config (at `key`) and its inner
    methods' against the rules of `prunelab.validate` (which composite takes which inner method included)."""
    from prunelab.validate import check_method  # imported here: validate reads every method module

    check_method(cfg, key)
    return _instantiate(cfg)


def _instantiate(cfg: Mapping[str, Any]) -> Method:
    import prunelab.methods  # noqa: F401  (registers every method module)

    return METHODS[str(cfg["kind"])](cfg)
