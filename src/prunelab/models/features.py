"""Named module outputs of a model (docs/design.md, "Features"): the one feature tap of the project.

Criteria read feature maps, distillation compares a student's maps with the dense teacher's,
structure discovery follows which tensor feeds which module, and the cost counter prices each
layer from its output shape: all of them tap named modules through `FeatureTap`.

    with FeatureTap(model, ["layer1.0.relu2"]) as tap:      # keep outputs
        model(x)
    tap.outputs["layer1.0.relu2"]

    FeatureTap(model, names, fn)                             # or hand each (name, module, inputs, output) to fn;
                                                             # a tensor fn returns replaces the module's output

`exact_surgery` checks that a change of form (a contraction, a compaction) keeps a model's logits.

A tap is a set of forward hooks, so it sees exactly what a manual `register_forward_hook` would.
It works under `torch.compile` when it is created before the model is compiled (the hooks are
traced into the graph; `outputs` is refreshed by every compiled forward).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType

import torch
from torch import nn

TapFn = Callable[[str, nn.Module, tuple, torch.Tensor], "torch.Tensor | None"]


class FeatureTap:
    """Forward hooks on the modules of `model` named in `names` (see module docstring)."""

    def __init__(self, model: nn.Module, names: Iterable[str], fn: TapFn | None = None) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self._fn = fn
        self._handles = [model.get_submodule(name).register_forward_hook(self._hook(name)) for name in names]

    def _hook(self, name: str) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if self._fn is not None:
                return self._fn(name, module, inputs, output)
            self.outputs[name] = output
            return None

        return hook

    def remove(self) -> None:
        """Remove every hook and drop the kept outputs."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode; on exit every submodule gets back its own mode (frozen BatchNorms stay frozen)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def zero_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """One all-zero image of `input_shape` (C, H, W) on the model's device, in its floating dtype."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.zeros(1, *input_shape, device=device, dtype=dtype)


@torch.no_grad()
def probe(model: nn.Module, input_shape: tuple[int, ...], names: Iterable[str], fn: TapFn) -> None:
    """One eval-mode forward pass of a zero image with `fn` tapping the modules in `names` (structure, cost)."""
    with FeatureTap(model, names, fn), eval_mode(model):
        model(zero_input(model, input_shape))


@torch.no_grad()
def exact_surgery(model: nn.Module, input_shape: tuple[int, ...], surgery: Callable[[nn.Module], nn.Module],
                  what: str, tolerance: float = 1e-4) -> tuple[nn.Module, float]:
    """`surgery(model)` (a change of form that must keep the function: contraction, compaction) checked on 8
    standard-normal images in eval mode: returns (new model, max |change of a logit| / max |logit|) and
    raises RuntimeError naming `what` when that relative error exceeds `tolerance`."""
    like = zero_input(model, input_shape)
    images = torch.randn(8, *input_shape, generator=torch.Generator().manual_seed(0)).to(like)
    with eval_mode(model):
        before = model(images)
    changed = surgery(model)
    with eval_mode(changed):
        moved = float((changed(images) - before).abs().max() / before.abs().max().clamp_min(1e-12))
    if not moved <= tolerance:
        raise RuntimeError(f"{what} moved the logits by {moved:.1e} (relative; tolerance {tolerance:g})")
    return changed, moved
