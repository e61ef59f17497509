"""The method contract (design.md, "Method").

A method turns a (dense, trained or freshly initialised) model into a compressed one:

    model = method.prepare(model, ctx)        # e.g. score and remove channels, swap layers
    fit(model, callbacks=method.callbacks(ctx))   # fine-tune, or train from scratch
    model = method.finalize(model, ctx)       # e.g. export low-rank factors

Methods register themselves by `kind` (the `method.kind` config key); a method config
file under conf/method/ picks a kind and sets its options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from prunelab.data.base import Dataset
from prunelab.errors import choose
from prunelab.train.callbacks import Callback


@dataclass
class Context:
    """What a method may use besides the model."""

    cfg: DictConfig  # this method's config node (cfg.method)
    data: Dataset  # for activation-based scores (train split) and evaluation
    device: torch.device
    seed: int
    teacher: nn.Module | None = None  # the trained dense model, eval mode (None in profile-only runs)
    model_name: str = ""
    run_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # numbers the method reports (-> record "extra")


class Method:
    """Base class; the defaults describe a method that changes nothing."""

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

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        return model

    def callbacks(self, ctx: Context) -> list[Callback]:
        return []

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        return model


METHODS: dict[str, type[Method]] = {}


def register(kind: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a Method available as `method.kind: <kind>`."""

    def add(cls: type[Method]) -> type[Method]:
        METHODS[kind] = cls
        return cls

    return add


def build_method(cfg: DictConfig) -> Method:
    """Instantiate the method named by `cfg.kind`."""
    import prunelab.methods  # noqa: F401  (registers every method module)

    return METHODS[choose("method kind", str(cfg.kind), METHODS)](cfg)
