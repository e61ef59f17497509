"""ImageNet backbones by name from torchvision or timm, with the head sized for the dataset.

`source: auto` takes torchvision's model of that name if there is one, else timm's.
Pretrained weights are downloaded by the library (cached in TORCH_HOME / HF_HOME); on a
machine without internet a missing cache is reported as one line with the fix.
"""

from __future__ import annotations

from torch import nn

from prunelab.errors import UserError

SOURCES = ("auto", "torchvision", "timm")


def _torchvision_names() -> set[str]:
    import torchvision

    return set(torchvision.models.list_models(module=torchvision.models))


def _timm_names() -> set[str]:
    import timm

    return set(timm.list_models())


def resolve_source(name: str, source: str) -> str:
    """Which library provides `name`; a UserError when neither does."""
    if source not in SOURCES:
        raise UserError(f"unknown model.source '{source}': choose one of {', '.join(SOURCES)}")
    if source in ("auto", "torchvision") and name in _torchvision_names():
        return "torchvision"
    if source in ("auto", "timm") and name in _timm_names():
        return "timm"
    where = "torchvision or timm" if source == "auto" else source
    raise UserError(f"model.name '{name}' is not a {where} model: see torchvision.models.list_models() or timm.list_models()")


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer of a torchvision model for one with `num_classes` outputs."""
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    if last.out_features == num_classes:
        return
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Linear(last.in_features, num_classes, bias=last.bias is not None))


def build_hub(name: str, num_classes: int, pretrained: bool = False, source: str = "auto") -> nn.Module:
    """A torchvision or timm model with a `num_classes`-way classifier."""
    lib = resolve_source(name, source)
    try:
        if lib == "torchvision":
            import torchvision

            if not pretrained:
                model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
            else:
                model = torchvision.models.get_model(name, weights="DEFAULT")
                _replace_head(model, num_classes)
        else:
            import timm

            model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    except (OSError, RuntimeError, ValueError) as exc:  # download and cache failures
        if not pretrained:
            raise
        raise UserError(
            f"model.pretrained=true: could not load pretrained weights for '{name}' from {lib} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); put the weights in the "
            "library cache (TORCH_HOME or HF_HOME) or set model.pretrained=false"
        ) from None
    model.arch = lambda: {"arch": "hub", "name": name, "source": lib, "num_classes": num_classes}  # type: ignore[assignment]
    return model
