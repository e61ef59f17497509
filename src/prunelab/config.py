"""Command-line overrides, shared by run.py, `prunelab.profile` and `prunelab.evaluate`.

A method config that holds another method (composition, methods/base.py `Composite`) declares
it in its defaults list, e.g. `- /method@pruner: l1` in conf/method/svd.yaml.  Hydra's own
override for that slot is `method@method.pruner=nuclear`; `method.pruner=nuclear` would replace
the pruner's whole config by a string.  `expand_overrides` rewrites the second form into the
first when the value names method configs, so both work (sweeps too: `method.pruner=l1,nuclear`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from prunelab.errors import UserError

CONF = Path(__file__).resolve().parents[2] / "conf"
# ${unique:} in conf/config.yaml's run and sweep directory names: a random tag per process, so jobs started in the
# same second never share a directory
if not OmegaConf.has_resolver("unique"):
    OmegaConf.register_new_resolver("unique", lambda: secrets.token_hex(3), use_cache=True)
_SLOT = re.compile(r"/method@(?:method\.)?(\w+)")  # package relative to method/, or absolute


@cache
def method_slots() -> frozenset[str]:
    """`method.<key>` of every slot that a method config fills with another method."""
    slots = set()
    for path in (CONF / "method").glob("*.yaml"):
        for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []):
            for key in entry if isinstance(entry, dict) else [entry]:
                if match := _SLOT.fullmatch(str(key)):
                    slots.add(f"method.{match.group(1)}")
    return frozenset(slots)


def expand_overrides(overrides: Sequence[str]) -> list[str]:
    """`overrides` with `method.<slot>=NAME[,NAME...]` written as Hydra's `method@method.<slot>=...`."""
    names = {p.stem for p in (CONF / "method").glob("*.yaml")}
    out = []
    for item in overrides:
        key, eq, value = item.partition("=")
        if eq and key in method_slots() and value and set(value.split(",")) <= names:
            item = f"method@{key}={value}"
        out.append(item)
    return out


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The run config that `python run.py <overrides>` would compose (without Hydra's own keys)."""
    if GlobalHydra.instance().is_initialized():  # inside run.py's Hydra app
        return compose("config", overrides=expand_overrides(overrides))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=expand_overrides(overrides))


def check_value_types(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """A `UserError` for an override that puts text where the config file has a number (`seed=abc`,
    `method.ratio=abc`), naming the key; composed once more with the overrides' group choices alone."""
    overrides = expand_overrides(overrides)
    values = [(o.partition("=")[0].lstrip("+~"), o) for o in overrides if "=" in o]
    values = [(k, o) for k, o in values if "@" not in k and not k.startswith("hydra.")
              and k in _leaves(cfg)]  # not a group choice (experiment=..., model=...) or a node
    if not any(isinstance(OmegaConf.select(cfg, k, default=None), str) for k, _ in values):
        return
    defaults = compose_config([o for o in overrides if o not in {v for _, v in values}])
    for key, _ in values:
        given, default = OmegaConf.select(cfg, key, default=None), OmegaConf.select(defaults, key, default=None)
        if isinstance(given, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
            raise UserError(f"{key}={given} is not a number: {key} takes a number (default {default})")


def _leaves(cfg: DictConfig) -> set[str]:
    """Dotted keys of every value of `cfg` that is not itself a mapping (lists count as values)."""
    def walk(node: dict, prefix: str) -> Iterator[str]:
        for key, value in node.items():
            yield from walk(value, f"{prefix}{key}.") if isinstance(value, dict) else (f"{prefix}{key}",)

    return set(walk(OmegaConf.to_container(cfg, resolve=False), ""))


def dataset_config(cfg: DictConfig, dataset: DictConfig) -> DictConfig:
    """`dataset` with the model's input resolution (`model.resolution`) where the dataset sets none:
    images are resized to the backbone's size on the device."""
    if dataset.get("resolution", "absent") is None and cfg.model.get("resolution") is not None:
        return OmegaConf.merge(dataset, {"resolution": int(cfg.model.resolution)})
    return dataset
