"""One contract for every layer type a method leaves in a model (docs/design.md, "Layer").

A layer type subclasses `Layer`, registers itself under a name (`@register_layer("lowrank")`)
and knows

    spec() -> dict            its structure (JSON-able; constructor arguments)
    from_spec(spec) -> Layer  a freshly initialised layer of that structure (classmethod)
    deploy() -> nn.Module     its inference form, exactly the same function (float64-tested)

`describe(model, reference)` turns a model into {module name: spec} and `rebuild(reference,
description)` turns a freshly built model back into one of the same structure, so every
`model.pt` reloads from `arch` + description + state dict without pickling modules:

- registered layers are described by their spec (their children are part of it);
- ordinary torch modules whose widths differ from the module of the same name in `reference`
  (a hub model whose channels Torch-Pruning removed) are described as "resized": the shapes of
  their own parameters and buffers and their width attributes (in/out channels, features,
  groups), and are resized in place on rebuild, keeping their class.

`deploy(model)` returns a copy of the model with every registered layer in its deploy form;
deploying a deployed model changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any, ClassVar

import torch
from torch import nn

WIDTH_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features",
               "num_channels", "normalized_shape")
RESIZED = "resized"


class Layer(nn.Module):
    """Base class of the project's layer types (see module docstring)."""

    kind: ClassVar[str] = ""

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Layer:
        return cls(**spec)

    def deploy(self) -> nn.Module:
        raise NotImplementedError


LAYERS: dict[str, type[Layer]] = {}


def register_layer(kind: str) -> Callable[[type[Layer]], type[Layer]]:
    """Class decorator: make a `Layer` subclass describable as `{"type": kind, **spec}`."""

    def add(cls: type[Layer]) -> type[Layer]:
        if kind in LAYERS or kind == RESIZED:
            raise ValueError(f"layer type '{kind}' is registered twice")
        cls.kind = kind
        LAYERS[kind] = cls
        return cls

    return add


def _own_shapes(module: nn.Module) -> dict[str, list[int]]:
    tensors = chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False))
    return {name: list(t.shape) for name, t in tensors if t is not None}


def _widths(module: nn.Module) -> dict[str, Any]:
    return {a: getattr(module, a) for a in WIDTH_ATTRS if hasattr(module, a)}


def describe(model: nn.Module, reference: nn.Module | None = None) -> dict[str, dict[str, Any]]:
    """{module name: {"type": ..., structure}} of every registered layer of `model`, and (with a
    `reference` model of the same architecture) of every module whose widths differ from it."""
    ref = dict(reference.named_modules()) if reference is not None else {}
    out: dict[str, dict[str, Any]] = {}
    owners: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(o + ".") for o in owners):
            continue
        if isinstance(module, Layer):
            out[name] = {"type": module.kind, **module.spec()}
            owners.append(name)
        elif reference is not None:
            shapes, widths = _own_shapes(module), _widths(module)
            base = ref.get(name)
            if base is None:
                if shapes:
                    raise ValueError(f"{name}: a {type(module).__name__} that the reference model lacks and that "
                                     "is not a registered layer type: it cannot be described")
            elif shapes != _own_shapes(base) or widths != _widths(base):
                out[name] = {"type": RESIZED, "shapes": shapes, "widths": widths}
    return out


def _resize(module: nn.Module, shapes: Mapping[str, list[int]], widths: Mapping[str, Any]) -> None:
    """Give `module`'s own parameters and buffers the described shapes (values are loaded afterwards)."""
    for attr, value in widths.items():
        setattr(module, attr, tuple(value) if isinstance(value, list) else value)
    for name, shape in shapes.items():
        old = getattr(module, name)
        fresh = torch.zeros(shape, dtype=old.dtype, device=old.device)
        setattr(module, name, nn.Parameter(fresh, requires_grad=old.requires_grad) if name in module._parameters
                else fresh)


def rebuild(model: nn.Module, description: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """`model` (freshly built from the same arch) with the described layers put back (see `describe`)."""
    for name, entry in description.items():
        spec = {k: v for k, v in entry.items() if k != "type"}
        if entry["type"] == RESIZED:
            _resize(model.get_submodule(name), spec["shapes"], spec["widths"])
        elif entry["type"] in LAYERS:
            model.set_submodule(name, LAYERS[entry["type"]].from_spec(spec))
        else:
            raise ValueError(f"{name}: unknown layer type '{entry['type']}' (registered: {', '.join(sorted(LAYERS))})")
    return model


def deploy(model: nn.Module) -> nn.Module:
    """A copy of `model` with every registered layer replaced by its `deploy()` form."""
    out = copy.deepcopy(model)
    if isinstance(out, Layer):
        return out.deploy()
    names = [n for n, m in out.named_modules() if isinstance(m, Layer)]
    for name in [n for n in names if not any(n.startswith(o + ".") for o in names)]:
        out.set_submodule(name, out.get_submodule(name).deploy())
    return out
