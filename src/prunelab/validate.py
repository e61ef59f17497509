"""The rules of every config key, in one place, checked before anything runs (docs/design.md, "Config rules").

`validate(cfg)` walks every leaf of a composed run config and checks it against the rule of its key
(prunelab/rules.py: its type, integer, number, flag, text or list, its range, or its allowed values);
the first leaf that breaks its rule is a `UserError` naming the key and what it takes.  Rules are
found by scope:

    SCOPES     config sections that share one table: `trainer` and `baseline.trainer` (RECIPE),
               `dataset` and `baseline.source` (DATASET), `model`, `logger`, `measure.latency`;
    METHODS    per method kind (`method.kind`), for `method` and, recursively, the inner method of a
               composite (`method.pruner`), whose allowed kinds are `INNER_KINDS`;
    TOP        everything else (`seed`, `device`, `paths.*`, experiment-level keys, ...).

Within a scope a key is a dotted path relative to it, `*` matching any run of characters (fnmatch);
the longest scope that holds a rule for the key wins.  A new config key gets its rule by adding one
line to its table; `tests/test_validate.py` fails for a key of `conf/` without one.  Rules that tie
several keys together live beside them: `Scope.checks` here (e.g. Nesterov needs momentum), and in a
method where they depend on the model (e.g. `method.compress_rate`'s length).

`pipeline.run`, `prunelab.profile`, `prunelab.evaluate` and run.py (before Hydra starts a single run)
call `validate`; `methods.build_method` checks a method config (`check_method`) and the training loop
its recipe (`train.optim.check_recipe`) with the same tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from prunelab.data import BUILDERS
from prunelab.errors import UserError, choose, one_line
from prunelab.layers.cst import FAMILIES, PATHS
from prunelab.layers.expanded import INITS
from prunelab.methods import METHODS, Composite
from prunelab.methods.basis import BASIS_CRITERIA
from prunelab.methods.channel import SCORING_FEATURES, TIES
from prunelab.methods.criteria import CRITERIA
from prunelab.methods.cst import REFITS, SALIENCIES
from prunelab.methods.lop import SP_FEATURES
from prunelab.methods.lrpet import SVD_DTYPES, TRANSFERS
from prunelab.methods.rounds import CRITERIA as ROUND_CRITERIA
from prunelab.models import ARCHS
from prunelab.models.cifar_vgg import FINAL_POOLS
from prunelab.models.hub import HEADS, SOURCES
from prunelab.record.wandb_mirror import MODES
from prunelab.rules import AnyOf, Flag, Free, Int, ListOf, Off, OneOf, Rates, Real, Regex, Rule, Text, show
from prunelab.surgery import STAGE_MODES
from prunelab.train.distributed import DEVICES
from prunelab.train.loop import AMP_MODES
from prunelab.train.optim import OPTIMIZERS, SCHEDULES

Rules = dict[str, Rule]
Check = Callable[[Mapping[str, Any], str], None]  # (node, its key) -> raises UserError


@dataclass(frozen=True)
class Scope:
    """The rules of a config section's keys (relative paths) and its checks that tie several keys."""

    rules: Rules
    checks: tuple[Check, ...] = ()


def _nesterov(recipe: Mapping[str, Any], key: str) -> None:
    if recipe.get("nesterov") and (recipe.get("optimizer") != "sgd" or not recipe.get("momentum")):
        raise UserError(f"{key}.nesterov=true needs {key}.optimizer=sgd and {key}.momentum > 0 (got "
                        f"{recipe.get('optimizer')}, {show(recipe.get('momentum'))}): set {key}.momentum=0.9 or "
                        f"{key}.nesterov=false")


FRACTION = Real(lo=0, hi=1, hi_open=True)
POSITIVE = Real(lo=0, lo_open=True)
NON_NEGATIVE = Real(lo=0)
COUNT = Int(lo=1)
SEED = Int(lo=0, hi=2**32 - 1)

RECIPE = Scope({  # conf/trainer/*.yaml (cifar_baseline.yaml documents every key)
    "name": Text(),
    "epochs": Int(lo=0),
    "batch_size": COUNT,
    "eval_batch_size": COUNT,
    "optimizer": OneOf(OPTIMIZERS),
    "lr": POSITIVE,
    "momentum": FRACTION,
    "nesterov": Flag(),
    "betas": ListOf(FRACTION, length=2, example="[0.9,0.999]"),
    "eps": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "decay_bn_and_bias": Flag(),
    "schedule": OneOf(SCHEDULES),
    "milestones": ListOf(Int(lo=0), example="[100,150]"),
    "gamma": POSITIVE,
    "warmup_epochs": NON_NEGATIVE,
    "label_smoothing": FRACTION,
    "amp": OneOf(AMP_MODES),
    "channels_last": Flag(),
    "compile": Flag(),
    "limit_steps": Int(lo=1, null=True, help="null: every step of an epoch"),
    "limit_eval_batches": Int(lo=1, null=True, help="null: every evaluation batch"),
}, checks=(_nesterov,))

DATASET = Scope({  # conf/dataset/*.yaml; checks that need the data itself stay in data/
    "name": OneOf(BUILDERS),
    "root": Text(null=True),
    "download": Flag(),
    "num_classes": Int(lo=2),
    "input_size": COUNT,
    "resize": COUNT,
    "mean": ListOf(Real(), min_len=1, example="[0.5,0.5,0.5]"),
    "std": ListOf(POSITIVE, min_len=1, example="[0.25,0.25,0.25]"),
    "pad": Int(lo=0),
    "flip": Flag(),
    "num_workers": Int(lo=0),
    "limit_train": Int(lo=1, null=True),
    "limit_test": Int(lo=1, null=True),
    "val_images": AnyOf((Int(lo=0), Real(lo=0, hi=1, lo_open=True, hi_open=True)),
                        says="an integer >= 0 or a fraction in (0, 1)"),
    "val_seed": Int(),
    "classes": ListOf(Int(lo=0), min_len=1, null=True, example="[5,6,7,8,9]"),
    "resolution": Int(lo=1, null=True),
    "channels": Int(lo=1, null=True),
    "split_seed": Int(),  # digits
    "test_images": COUNT,  # digits
    "seed": Int(),  # synthetic
    "num_train": COUNT,
    "num_test": COUNT,
    "generated_classes": Int(lo=2, null=True),
    "image_size": Int(lo=4),
})


def _resnet_depth(model: Mapping[str, Any], key: str) -> None:
    depth = model.get("depth")
    if model.get("arch") == "cifar_resnet" and isinstance(depth, int) and (depth - 2) % 6:
        raise UserError(f"{key}.depth={depth}: a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110, ...)")


MODEL = Scope({  # conf/model/*.yaml
    "arch": OneOf(ARCHS),
    "name": Text(),
    "depth": Int(lo=8),
    "widths": ListOf(COUNT, length=3, example="[16,32,64]"),
    "cfg": ListOf(AnyOf((COUNT, OneOf(("M",))), says="a width >= 1 or M (max-pool)"), min_len=1,
                  example="[64,M,128]"),
    "classifier_hidden": ListOf(COUNT, example="[512]"),
    "conv_bias": Flag(),
    "final_pool": OneOf(FINAL_POOLS),
    "source": OneOf(SOURCES),
    "pretrained": Flag(),
    "head": OneOf(HEADS),
    "resolution": Int(lo=1, null=True),
}, checks=(_resnet_depth,))

LOGGER = Scope({  # conf/logger/*.yaml
    "name": OneOf(("none", "wandb")),
    "mode": OneOf(MODES),
    "project": Text(),
    "entity": Text(null=True),
    "group": Text(null=True),
    "tags": ListOf(Text(), example="[baseline]"),
    "job_type": Text(null=True),
    "timeout_s": POSITIVE,
})

LATENCY = Scope({  # conf/config.yaml measure.latency
    "batch": ListOf(COUNT, min_len=1, null=True, example="[1,64]", help="null: [1, 64] on the CPU, [256] on CUDA"),
    "fold_bn": Flag(),
    "min_run_time": POSITIVE,
})

SCOPES = {"trainer": RECIPE, "baseline.trainer": RECIPE, "dataset": DATASET, "baseline.source": DATASET,
          "model": MODEL, "logger": LOGGER, "measure.latency": LATENCY}

TOP = Scope({  # conf/config.yaml, and keys of conf/experiment/*.yaml outside every section
    "seed": SEED,
    "device": OneOf(DEVICES),
    "resume": Flag(),
    "experiment_name": Text(),
    "baseline.checkpoint": Text(null=True),
    "baseline.skip": Flag(),
    "results.csv": Text(),
    "budget.macs": Real(lo=0, hi=1, lo_open=True, null=True, help="null: no MAC budget"),
    "budget.params": Real(lo=0, hi=1, lo_open=True, null=True, help="null: no parameter budget"),
    "budget.latency": Real(lo=0, hi=1, lo_open=True, null=True, help="null: no latency budget"),
    "budget.tolerance": FRACTION,
    "measure.latency": Off(null=True, on="measure.latency.batch=[1,64]"),
    "paths.baselines": Text(),
    "paths.checkpoints": Text(),
    "smoke": Free(),  # null, or debug=fast's caps (conf/debug/fast.yaml), read by prunelab/smoke.py
    "smoke.*": Free(),
    "rate_set": OneOf(("paper", "hrankplus")),  # energy_aware_cifar10: which row of `rates`
    "rates.*": Free(),
    "arm": OneOf(("ft", "lop")),  # lop_cifar10, lop_imagenet: which row of `arms`
    "point": OneOf(("macs50", "macs30", "params50")),  # compare: which budget of `points`
    "points.*": Free(),
    "arms.*": Free(),
    "ranks_of.*": Free(),  # lrpet_cifar10
    "g_of.*": Free(),  # lrpet_imagenet
    "stability.criteria": ListOf(OneOf(CRITERIA), min_len=1, example="[nuclear,hrank]"),  # energy_aware_stability
    "stability.images": ListOf(COUNT, min_len=1, example="[1,8,32]"),
    "stability.reference_images": COUNT,
    "stability.reference_seed": SEED,
    "stability.seeds": ListOf(SEED, min_len=1, example="[0,1,2]"),
    "stability.noise": ListOf(POSITIVE, min_len=1, example="[0.1,1.0]"),
    "stability.noise_images": COUNT,
    "stability.accuracy_images": ListOf(COUNT, example="[8,128]"),
})

ROUNDS: Rules = {  # methods/rounds.py: basis pruning and taylor_gates
    "fraction": Real(lo=0, hi=1, lo_open=True, hi_open=True, help="the share of the remaining units pruned per round"),
    "min_keep": Int(lo=1, help="units every layer keeps"),
    "tolerance": Real(lo=0, help="accuracy points below the reference"),
    "reference_epochs": COUNT,
    "epochs_per_round": COUNT,
    "max_rounds": Int(lo=0),
    "scoring.batches": Int(lo=1, null=True, help="null: one pass over the training split"),
}

BASIS: Rules = {
    "criterion": OneOf(BASIS_CRITERIA),
    **ROUNDS,
    "l1": NON_NEGATIVE,
    "energy": Real(lo=0, hi=1, lo_open=True, help="the share of squared singular values each layer keeps"),
    "keep": AnyOf((COUNT, Real(lo=0, hi=1, lo_open=True)), null=True,
                  says="a number of bases per layer (>= 1) or a fraction in (0, 1] of each layer's rank"),
    "svd_dtype": OneOf(SVD_DTYPES),
}

METHOD_KINDS: dict[str, Rules] = {  # conf/method/*.yaml, by method.kind; `name` and `kind` are common
    "dense": {},
    "channel": {
        "criterion": OneOf(CRITERIA),
        "ratio": Real(lo=0, hi=1, hi_open=True, help="the fraction of filters removed"),
        "compress_rate": Rates(null=True),
        "stage_outputs": Flag(),
        "round_to": Int(lo=1, help="1: no rounding"),
        "allocation": OneOf(("uniform", "global")),
        "ties": OneOf(TIES),
        "reinit_after_pruning": Flag(),
        "stage_mode": OneOf(STAGE_MODES),
        "scoring.images": COUNT,
        "scoring.batch_size": COUNT,
        "scoring.augment": Flag(),
        "scoring.feature": OneOf(SCORING_FEATURES),
        "scoring.vgg_pool": Flag(),
    },
    "svd": {
        "rank_ratio": Real(lo=0, hi=1, hi_open=True, help="the fraction of singular values cut"),
        "svd_dtype": OneOf(SVD_DTYPES),
    },
    "lop": {  # lop.py checks the keys that go together (init and noise, sp_feature and sp_layers)
        "expand": Int(lo=0, help="the expansion ratio E (0: no expansion)"),
        "init": OneOf(INITS),
        "noise": NON_NEGATIVE,
        "layers": Regex(),
        "gamma": Real(lo=0, help="0: no distillation"),
        "sp_layers": Regex(help="all, stages or a regular expression of module names"),
        "sp_feature": OneOf(SP_FEATURES),
        "head": Flag(),
        "lr_match": Flag(),
        "factor_lr_scale": Real(lo=0, lo_open=True, help="1: the recipe's lr on the factors"),
        "factor_decay": Real(lo=0, null=True, help="null: the recipe's weight decay"),
        "sp_logits": Flag(),
    },
    "cst": {
        "rate": Real(lo=0, hi=1, hi_open=True, help="the global fraction of filters rebuilt from templates"),
        "ramp_epochs": Int(lo=0, help="0: prune before training"),
        "groups": COUNT,
        "min_templates": COUNT,
        "family": OneOf(FAMILIES),
        "saliency": OneOf(SALIENCIES),
        "transform_init": OneOf(REFITS),
        "transform_decay": Flag(),
        "from_dense": Flag(),
        "path": OneOf(PATHS),
        "pointwise": Flag(),
    },
    "lrpet": {  # lrpet.py checks `ranks` against the model and against the floors
        "rank_ratio": Real(lo=0, hi=1, lo_open=True, hi_open=True, help="the fraction of singular values cut"),
        "ranks": ListOf(COUNT, min_len=1, null=True, example="[16,12,12]"),
        "rank_floor_first": Int(lo=1, null=True, help="null: off"),
        "rank_floor": Int(lo=1, null=True, help="null: off"),
        "energy_transfer": OneOf(TRANSFERS),
        "redu_fac": Real(lo=0, hi=1, hi_open=True),
        "bn_rectify": Flag(),
        "bn_eps": POSITIVE,
        "dead_threshold": NON_NEGATIVE,
        "project_every": Int(lo=0, help="0: once per epoch, K > 0: every K steps"),
        "project_at_epoch_end": Flag(),
        "svd_dtype": OneOf(SVD_DTYPES),
    },
    "basis": BASIS,
    "taylor_gates": {"criterion": OneOf(ROUND_CRITERIA), **ROUNDS},
    "double": {
        **BASIS,
        "pruner_epochs": Int(lo=0, help="0: the pruner does not fine-tune"),
        "budget_share": Real(lo=0, hi=1, help="the share of a budget's reduction the channel pruner makes"),
        **{f"pruner.{key}": rule for key, rule in ROUNDS.items()},  # its pruner follows basis pruning's rounds
    },
}
COMMON: Rules = {"name": Text(), "kind": OneOf(METHODS)}

INNER = Composite.inner_key  # the key of a composite's inner method
INNER_KINDS: dict[str, tuple[str, ...]] = {  # the inner methods each composite is defined for
    "svd": ("channel",),  # the pruned model's convs are factorised: channel pruning keeps plain convs
    "lop": ("channel",),  # the pruned model's convs and Linear layers are expanded
    "double": ("channel", "taylor_gates"),  # channel pruning first, then basis pruning of the smaller network
}


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`cfg` as plain containers, interpolations resolved.  A broken interpolation is a `UserError`: the rule of a
    key it reads when that key breaks one (`rate_set=nosuch` for `${rates.${rate_set}}`), else OmegaConf's line."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as err:
        _check_resolvable(node)
        raise UserError(one_line(err)) from None


def _check_resolvable(cfg: DictConfig) -> None:
    """Check the leaves of `cfg` that resolve (a config with a broken interpolation)."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    found = scopes(tree)
    for path, _ in _leaves(tree):
        try:
            value = OmegaConf.select(cfg, path, throw_on_resolution_failure=True)
            value = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
        except OmegaConfBaseException:
            continue
        rule = rule_for(path, found)
        if rule is not None and not isinstance(value, DictConfig):
            rule.check(path, value)


def _leaves(node: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


def _select(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def inner_names(kinds: Sequence[str]) -> str:
    """The method configs (conf/method/*.yaml) of `kinds`, as 'a, b or c'."""
    from prunelab.config import method_kinds

    names = sorted(name for name, kind in method_kinds().items() if kind in kinds)
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def check_inner_kind(key: str, composite: str, name: str, kind: str) -> None:
    """Refuse the inner method `name` (of `kind`) at `key` when its `composite` is not defined for that kind."""
    kinds = INNER_KINDS.get(composite, ())
    if composite in INNER_KINDS and kind not in kinds:
        raise UserError(f"{key}={name}: {key.rpartition('.')[0]}={composite} is defined for inner methods of kind "
                        f"{' or '.join(kinds)} only: choose {key}={inner_names(kinds)}")


def _method_scopes(node: Any, key: str, composite: str = "") -> Iterator[tuple[str, Scope]]:
    """(key, scope) of the method config at `key` and of its inner methods; refuses a node that is no method
    config, and an inner method of a kind its `composite` (the outer method's kind) is not defined for."""
    kinds = INNER_KINDS[composite] if composite else tuple(METHODS)
    if not isinstance(node, Mapping) or "kind" not in node:
        raise UserError(f"{key}={node!r} is not a method config: choose one with {key}=NAME ({inner_names(kinds)})")
    kind = choose(f"{key}.kind", show(node["kind"]), METHODS)
    if composite:
        check_inner_kind(key, composite, str(node.get("name", kind)), kind)
    yield key, Scope({**COMMON, **METHOD_KINDS.get(kind, {})})
    if kind in INNER_KINDS:
        yield from _method_scopes(node.get(INNER), f"{key}.{INNER}", kind)


def scopes(tree: Mapping[str, Any]) -> list[tuple[str, Scope]]:
    """Every (key, scope) of the config `tree`, the longest key first."""
    found = [("", TOP), *((key, scope) for key, scope in SCOPES.items() if isinstance(_select(tree, key), Mapping))]
    return _longest_first([*found, *_method_scopes(tree.get("method"), "method")])


def _longest_first(found: list[tuple[str, Scope]]) -> list[tuple[str, Scope]]:
    return sorted(found, key=lambda item: -len(item[0]))


def rule_for(path: str, found: list[tuple[str, Scope]]) -> Rule | None:
    """The rule of the leaf at `path` in the scopes `found` (None: no rule covers it)."""
    for key, scope in found:
        if key and not path.startswith(f"{key}."):
            continue
        relative = path[len(key) + 1:] if key else path
        if relative in scope.rules:
            return scope.rules[relative]
        for pattern, rule in scope.rules.items():
            if "*" in pattern and fnmatchcase(relative, pattern):
                return rule
    return None


def rules_of(cfg: Mapping[str, Any]) -> Iterator[tuple[str, Any, Rule | None]]:
    """(key, value, its rule or None) of every leaf of the composed config `cfg`."""
    tree = _plain(cfg)
    found = scopes(tree)
    for path, value in _leaves(tree):
        yield path, value, rule_for(path, found)


def _check(tree: Mapping[str, Any], found: list[tuple[str, Scope]]) -> None:
    for path, value in _leaves(tree):
        rule = rule_for(path, found)
        if rule is not None:
            rule.check(path, value)
    for key, scope in found:
        for check in scope.checks:
            check(_select(tree, key) if key else tree, key)


def _nest(key: str, node: dict[str, Any]) -> dict[str, Any]:
    """{"a": {"b": node}} for key "a.b"."""
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def validate(cfg: Mapping[str, Any]) -> None:
    """Check every key of a composed run config (module docstring); the first bad one is a `UserError`."""
    tree = _plain(cfg)
    _check(tree, scopes(tree))


def check_node(node: Mapping[str, Any], scope: Scope, key: str) -> None:
    """Check one config section `node` (e.g. a trainer recipe) against `scope`, its keys named `key`.KEY."""
    _check(_nest(key, _plain(node)), [(key, scope)])


def check_method(node: Mapping[str, Any], key: str = "method") -> None:
    """Check a method config and its inner methods (`methods.build_method`)."""
    tree = _nest(key, _plain(node))
    _check(tree, _longest_first(list(_method_scopes(_select(tree, key), key))))
