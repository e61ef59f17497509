"""Command-line overrides, shared by run.py, `prunelab.profile` and `prunelab.evaluate`.

A method config that holds another method (composition, methods/base.py `Composite`) declares
it in its defaults list, e.g. `- /method@pruner: l1` in conf/method/svd.yaml.  Hydra's own
override for that slot is `method@method.pruner=nuclear`; `method.pruner=nuclear` would replace
the pruner's whole config by a string.  `expand_overrides` rewrites the second form into the
first when the value names method configs, so both work (sweeps too: `method.pruner=l1,nuclear`).
`check_hydra_overrides` checks Hydra's own settings that Hydra would report as a traceback.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
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


@cache
def method_kinds() -> dict[str, str]:
    """{name: kind} of every method config file (a file without `kind` takes its first default's)."""

    def kind(name: str) -> str:
        node = OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{name}.yaml"))
        own = node.get("method", node) if isinstance(node.get("method"), dict) else node  # @package _global_ files
        if "kind" in own:
            return str(own["kind"])
        parents = [d for d in node.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        return kind(parents[0])

    return {p.stem: kind(p.stem) for p in sorted((CONF / "method").glob("*.yaml"))}


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
    """The run config that `python run.py <overrides>` would compose (without Hydra's own keys).

    An inner method its composite is not defined for (`method=svd method.pruner=basis`) is a `UserError`
    that names the composite's inner methods (prunelab.validate), not Hydra's message about the file."""
    overrides = expand_overrides(overrides)
    try:
        return _compose(overrides)
    except HydraException:
        _check_inner_methods(overrides)
        raise


def _check_inner_methods(overrides: Sequence[str]) -> None:
    """A `UserError` when a slot override (`method@method.pruner=NAME`) asks the composite of the other overrides
    for an inner method it is not defined for (Hydra then fails on the inner file's own defaults)."""
    from prunelab.validate import check_inner_kind  # imported here: validate reads every method module

    slots = [o.partition("=") for o in overrides if o.startswith("method@method.")]
    if not slots:
        return
    try:
        outer = _compose([o for o in overrides if not o.startswith("method@method.")]).method
    except HydraException:
        return
    for key, _, names in slots:
        for name in names.split(","):
            if name in method_kinds():
                check_inner_kind(key.partition("@")[2], str(outer.kind), name, method_kinds()[name])


def _compose(overrides: Sequence[str]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():  # inside run.py's Hydra app
        return compose("config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def check_hydra_overrides(overrides: Sequence[str]) -> None:
    """A `UserError` for Hydra's own settings that Hydra would report as a traceback: an output folder
    (`hydra.run.dir`, `hydra.sweep.dir`) that is a file or cannot be created, the SLURM launcher off a cluster."""
    for item in overrides:
        key, _, value = item.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            path = Path(value).expanduser()
            existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
            if not existing.is_dir():
                raise UserError(f"{key}={value}: {existing} is a file, not a folder: give a folder (new or existing)")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise UserError(f"{key}={value}: cannot write in {existing}: give a folder you can write to")
        if key == "hydra/launcher" and value in ("slurm", "submitit_slurm") and shutil.which("srun") is None:
            raise UserError(f"{item} submits the jobs to SLURM, but this machine has no srun: run the command on the "
                            "cluster (a login node), or leave hydra/launcher out to run the jobs here")


def dataset_config(cfg: DictConfig, dataset: DictConfig) -> DictConfig:
    """`dataset` with the model's input resolution (`model.resolution`) where the dataset sets none:
    images are resized to the backbone's size on the device."""
    if dataset.get("resolution", "absent") is None and cfg.model.get("resolution") is not None:
        return OmegaConf.merge(dataset, {"resolution": int(cfg.model.resolution)})
    return dataset
