"""`debug=fast` (conf/debug/fast.yaml): any run in seconds with every step exercised, recorded as a smoke run.

The run config's `smoke` block (null unless a debug config sets it) is applied by `capped(cfg)` before anything
runs:

    smoke.at_most.trainer.KEY: N   KEY of every trainer recipe (the method's `trainer`, the dense baseline's
                                   `baseline.trainer`) lowered to at most N
    smoke.at_most.method.KEY: N    KEY of the method and of every method it holds (`method.pruner`, ...) lowered
                                   to at most N wherever that node has the key; a nested key reaches into the
                                   same block of the method (`...method.scoring.batches`: `method.scoring.batches`)
    smoke.set.method.KEY: V        KEY set to V wherever a method node has it (a value that makes a step run
                                   rather than a count: basis pruning's `tolerance`, so that every round runs)

A null value means "no limit" (every batch, a full pass) and is lowered to N; 0 stays 0 (an untrained
baseline, no rounds, no ramp).  One rule serves every method: a method that adds a knob for a count of epochs,
rounds, ramp steps or scoring batches gives it a key the block already caps, or adds one line to
conf/debug/fast.yaml.  A run with a `smoke` block records `extra.smoke: true`, and the report skips such rows.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf


def is_smoke(cfg: DictConfig) -> bool:
    """Whether `cfg` is a smoke run (a debug config set its `smoke` block)."""
    return cfg.get("smoke") is not None


def _method_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """(path, node) of the method config at `path` and of every method config nested in it (a node with `kind`)."""
    if not isinstance(node, DictConfig):
        return
    if "kind" in node:
        yield path, node
    for key in node:
        if not OmegaConf.is_interpolation(node, str(key)):
            yield from _method_nodes(node.get(key), f"{path}.{key}")


def _trainer_nodes(cfg: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    """The trainer recipes of a run; one that interpolates another (`baseline.trainer: ${trainer}`) follows it."""
    yield "trainer", cfg.trainer
    if not OmegaConf.is_interpolation(cfg.baseline, "trainer") and isinstance(cfg.baseline.get("trainer"), DictConfig):
        yield "baseline.trainer", cfg.baseline.trainer


def _apply(node: DictConfig, path: str, values: Any, changes: dict[str, tuple[Any, Any]], at_most: bool) -> None:
    """Every key of `values` (nested like `node`) that `node` has: lowered to at most its value (`at_most`; null
    is lowered too), else set to it."""
    for key, target in (values or {}).items():
        if key not in node or OmegaConf.is_missing(node, key):
            continue
        value = node[key]
        if isinstance(target, Mapping):
            if isinstance(value, DictConfig):
                _apply(value, f"{path}.{key}", target, changes, at_most)
            continue
        if at_most and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            continue  # not a count: the method's own check names the key
        if at_most and value is not None and value <= target or not at_most and value == target:
            continue
        node[key] = target
        changes[f"{path}.{key}"] = (value, target)


def capped(cfg: DictConfig) -> tuple[DictConfig, dict[str, tuple[Any, Any]]]:
    """A copy of `cfg` with the `smoke` block applied, and {key: (old value, new value)} of what changed;
    `cfg` itself when it has no `smoke` block."""
    if not is_smoke(cfg):
        return cfg, {}
    cfg = copy.deepcopy(cfg)
    at_most, values = cfg.smoke.get("at_most") or {}, cfg.smoke.get("set") or {}
    changes: dict[str, tuple[Any, Any]] = {}
    for path, node in _method_nodes(cfg.method, "method"):
        _apply(node, path, at_most.get("method"), changes, at_most=True)
        _apply(node, path, values.get("method"), changes, at_most=False)
    for path, node in _trainer_nodes(cfg):
        _apply(node, path, at_most.get("trainer"), changes, at_most=True)
    return cfg, changes
