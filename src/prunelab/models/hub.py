"""ImageNet backbones by name from torchvision or timm, with the head sized for the dataset.

`source: auto` takes torchvision's model of that name if there is one, else timm's.
Pretrained weights are downloaded by the library (cached in TORCH_HOME / HF_HOME); on a
machine without internet a missing cache is reported as one line with the fix.  timm's
weights are looked up in the Hugging Face cache first with the hub offline; only when they
are not there is the hub contacted, after one quick reachability check (huggingface_hub
itself retries for a minute or more before it gives up on a machine without network).
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Iterator

from torch import nn

from prunelab.errors import UserError, one_line

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


def classifier_of(model: nn.Module) -> nn.Linear:
    """The last Linear layer (the classifier head)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer (the classifier) for a freshly initialised one with `num_classes` outputs."""
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    like = {"device": last.weight.device, "dtype": last.weight.dtype}
    model.set_submodule(name, nn.Linear(last.in_features, num_classes, bias=last.bias is not None, **like))


def gap_linear_head(model: nn.Module, num_classes: int) -> None:
    """Global average pooling + one Linear instead of a multi-layer classifier (torchvision VGG, AlexNet).

    A transfer target needs a new classifier anyway; VGG's fc6/fc7 (about 120M weights) would
    dominate every parameter count (docs/papers/basis_pruning.md §5.4).  Models whose head is already
    pooling + one Linear (ResNet, DenseNet, MobileNetV2) only get the new Linear.
    """
    classifier = getattr(model, "classifier", None)
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)] if isinstance(classifier, nn.Module) else []
    if len(linears) > 1 and hasattr(model, "avgpool"):
        channels = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(channels, num_classes)
    else:
        replace_head(model, num_classes)


HEADS = ("keep", "gap_linear")
REACHABLE_TIMEOUT_S = 5


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub in offline mode (the cache only, no request) inside the block."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = offline


def _reachable(url: str) -> bool:
    """Whether `url` answers at all (any HTTP status) within REACHABLE_TIMEOUT_S, through the environment's proxy."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=REACHABLE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def _timm_model(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    """timm's model; pretrained weights from the Hugging Face cache, else downloaded if the hub can be reached."""
    import timm
    from huggingface_hub import constants

    if not pretrained:
        return timm.create_model(name, num_classes=num_classes)
    try:
        with _hub_offline():
            return timm.create_model(name, pretrained=True, num_classes=num_classes)
    except FileNotFoundError:  # huggingface_hub's LocalEntryNotFoundError: not in the cache
        if constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
            raise UserError(
                f"model.pretrained=true: the weights of '{name}' are not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE}) and {constants.ENDPOINT} cannot be reached (offline); download them on a "
                f"machine with internet (timm.create_model('{name}', pretrained=True)) and copy the cache, point HF_HOME "
                "at it, or set model.pretrained=false"
            ) from None
    return timm.create_model(name, pretrained=True, num_classes=num_classes)


def build_hub(name: str, num_classes: int, pretrained: bool = False, source: str = "auto",
              head: str = "keep") -> nn.Module:
    """A torchvision or timm model with a `num_classes`-way classifier.

    `head`: "keep" resizes the library's own classifier; "gap_linear" makes it global pooling + one
    Linear (`gap_linear_head`; timm models use `reset_classifier`, which already is).
    """
    if head not in HEADS:
        raise UserError(f"unknown model.head '{head}': choose one of {', '.join(HEADS)}")
    lib = resolve_source(name, source)
    try:
        if lib == "torchvision":
            import torchvision

            if not pretrained and head == "keep":
                model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
            else:
                model = torchvision.models.get_model(name, weights=None)
                if pretrained:  # the checkpoint read with weights_only=True: tensors only, no pickled code
                    weights = torchvision.models.get_model_weights(name).DEFAULT
                    model.load_state_dict(weights.get_state_dict(progress=True, check_hash=True, weights_only=True))
                if head == "gap_linear":
                    gap_linear_head(model, num_classes)
                elif classifier_of(model).out_features != num_classes:  # ImageNet itself keeps the trained head
                    replace_head(model, num_classes)
        else:
            model = _timm_model(name, num_classes, pretrained)
    except (OSError, RuntimeError, ValueError) as exc:  # download and cache failures
        if not pretrained:
            raise
        raise UserError(
            f"model.pretrained=true: could not load pretrained weights for '{name}' from {lib} "
            f"({type(exc).__name__}: {one_line(exc)[:120]}); put the weights in the "
            "library cache (TORCH_HOME or HF_HOME) or set model.pretrained=false"
        ) from None
    model.hub_arch = {"arch": "hub", "name": name, "source": lib, "num_classes": num_classes, "head": head}
    model.arch = lambda: dict(model.hub_arch)  # type: ignore[assignment]
    return model
