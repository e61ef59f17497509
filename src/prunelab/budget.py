"""A budget instead of a knob: `budget.macs=F`, `budget.params=F` or `budget.latency=F` keeps at most F of the dense
model's cost (latency: measured on the run's device at the first `measure.latency.batch`, as runs record it).

For a method whose structure is fixed before training, the cost after compression is a function c(k) of its knob k
(`KNOBS`: channel pruners' `ratio`, LRPET's and svd's `rank_ratio`, a composite's inner knob), taken
from the profile (`prunelab.profile.profile`: random weights, no data, the same numbers `python -m prunelab.profile`
prints) as the fraction f(k) = c(k) / c(dense).  f is non-increasing in k, so the least compression that meets the
budget is found by bisection on [low, high]:

    f(low) <= F                    ->  k = low (nothing needs removing)
    f(high) > F                    ->  refused: the budget is below the method's floor f(high)
    else, while high - low > step:  mid = (low + high) / 2; f(mid) <= F ? high = mid : low = mid;  k = high

so the achieved cost f(k) never exceeds F.  Channel counts are integers, so f is a step function and f(k) may fall
below F: a gap larger than `budget.tolerance` is refused too, in one line that names the gap and the ways out.
The solved knob is written into the config before anything runs; the record keeps the budget, the cost achieved
and the knob (`extra.budget`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

from omegaconf import DictConfig, OmegaConf

from prunelab.errors import UserError

COSTS = ("macs", "params", "latency")
STEP = 1e-3  # bisection stops when the knob's interval is this narrow (finer than one channel of 64)


@dataclass(frozen=True)
class Knob:
    """A method's compression knob: the config key and the interval it may take (cost non-increasing in it)."""

    key: str
    low: float
    high: float


# method kind -> its knob (relative to the method node); composites name their inner method's
KNOBS = {
    "channel": Knob("ratio", 0.0, 0.99),
    "lrpet": Knob("rank_ratio", 0.001, 0.99),  # LRPET's g lies in (0, 1)
    "svd": Knob("rank_ratio", 0.0, 0.99),  # the pruner keeps its configured ratio; the ranks take the budget
    "lop": Knob("pruner.ratio", 0.0, 0.99),
}


@dataclass(frozen=True)
class Target:
    """A budget a method meets by itself while it prunes (its structure depends on trained weights)."""

    cost: str
    fraction: float
    tolerance: float
    reference: float | None = None  # the cost `fraction` is of (None: the stage's unpruned model's)


WHILE_TRAINING = ("basis", "taylor_gates", "double", "cst")  # structure chosen while training: a stopping target


def meets_itself(cfg: DictConfig) -> bool:
    """Whether the method meets a budget while it prunes: channel pruners with `allocation=global` (in `prepare`;
    also as LOP's pruner, whose expansion contracts back to the pruned network), basis and gate rounds (their
    stopping target, methods/rounds.py) and CST's ramp (which aims at the cost, methods/cst.py)."""
    kind, pruner = str(cfg.method.kind), cfg.method.get("pruner")
    globally = lambda node: str(node.kind) == "channel" and node.get("allocation") == "global"  # noqa: E731
    return kind in WHILE_TRAINING or globally(cfg.method) or (kind == "lop" and globally(pruner))


@dataclass(frozen=True)
class Solution:
    """What the record keeps: the budget asked for, the knob value that met it and the cost it reached."""

    cost: str
    budget: float
    knob: str
    value: float
    achieved: float
    tolerance: float


def fewest(low: int, high: int, fits: Callable[[int], bool]) -> int:
    """The least n in (low, high] with `fits(n)`, by bisection, given `fits` is monotone, false at `low` and true
    at `high` (how many units, filters or templates a method must remove to meet a budget)."""
    while high - low > 1:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid
    return high


def requested(cfg: DictConfig) -> tuple[str, float] | None:
    """(cost, fraction) of the config's budget, None without one; two budgets at once are refused."""
    asked = [(cost, cfg.budget[cost]) for cost in COSTS if cfg.budget.get(cost) is not None]
    if len(asked) > 1:
        raise UserError(f"budget: one budget at a time, got {', '.join(f'budget.{c}={v}' for c, v in asked)}: "
                        "drop all but one")
    return None if not asked else (asked[0][0], float(asked[0][1]))


def knob_of(cfg: DictConfig) -> Knob:
    """The knob of the config's method, or one line saying why it has none (yet)."""
    kind = str(cfg.method.kind)
    if kind == "channel" and cfg.method.get("compress_rate") is not None:
        raise UserError("budget: method.compress_rate fixes every layer's rate; give method.compress_rate=null to let "
                        "the budget choose method.ratio")
    if kind == "lop" and str(cfg.method.pruner.kind) != "channel":
        raise UserError(f"budget: method=lop needs a channel pruner to take the budget, got {cfg.method.pruner.kind}")
    if kind not in KNOBS:
        raise UserError(f"budget: method={cfg.method.name} has no knob that fixes its cost before training (methods "
                        f"with one: {', '.join(sorted(KNOBS))})")
    return KNOBS[kind]


def profile_fraction(cfg: DictConfig, cost: str) -> float:
    """The compressed model's `cost` as a fraction of the dense model's (prunelab.profile, random weights); for
    latency, dense / compressed time measured as runs record it (deploy form, BatchNorm folded, interleaved) on
    the run's device at the first `measure.latency.batch`."""
    from prunelab.profile import compressed, profile

    if cost != "latency":
        out = profile(cfg)
        return out[cost] / out[f"base_{cost}"]
    from prunelab.measure.latency import configured_latency
    from prunelab.train.distributed import World, pick_device

    dense, model, data, _, _ = compressed(cfg)
    device = pick_device(str(cfg.device), World())
    node = cfg.measure.latency if isinstance(cfg.measure.latency, DictConfig) else OmegaConf.create({})
    batches = list(node.get("batch") or ([256] if device.type == "cuda" else [1, 64]))[:1]
    settings = copy.deepcopy(cfg)
    OmegaConf.update(settings, "measure.latency", {**OmegaConf.to_container(node), "batch": batches}, merge=False)
    timed = configured_latency(settings, model.to(device), dense.to(device), tuple(data.input_shape), device)
    return 1 / timed[f"batch_{batches[0]}"]["speedup"]


def solve(cfg: DictConfig, fraction: Callable[[DictConfig, str], float] = profile_fraction) -> Solution | None:
    """The knob value meeting the config's budget (module docstring); None without a budget."""
    asked = requested(cfg)
    if asked is None:
        return None
    cost, budget = asked
    knob = knob_of(cfg)
    key = f"method.{knob.key}"
    tolerance = float(cfg.budget.tolerance)

    def at(value: float) -> float:
        trial = copy.deepcopy(cfg)
        OmegaConf.update(trial, key, value, merge=False)
        return fraction(trial, cost)

    low, high = knob.low, knob.high
    f_low, f_high = at(low), at(high)
    if f_low <= budget:
        return Solution(cost, budget, key, low, f_low, tolerance)
    if f_high > budget:
        raise UserError(f"budget.{cost}={budget:g} is below {cfg.method.name}'s floor: at {key}={high:g}, the most "
                        f"it removes, the model keeps {f_high:.4f} of the dense {cost}; ask for at least {f_high:.4f}")
    while high - low > STEP:
        mid = (low + high) / 2
        f_mid = at(mid)
        if f_mid <= budget:
            high, f_high = mid, f_mid
        else:
            low = mid
    value = round(high, 6)
    if budget - f_high > tolerance:
        raise UserError(f"budget.{cost}={budget:g}: the closest {cfg.method.name} gets from below is {f_high:.4f} "
                        f"({key}={value:g}), more than budget.tolerance={tolerance:g} under it; raise "
                        "budget.tolerance or choose another budget")
    return Solution(cost, budget, key, value, f_high, tolerance)


def target(cfg: DictConfig) -> Target | None:
    """The budget a self-budgeting method meets in `prepare` (`meets_itself`), else None."""
    asked = requested(cfg)
    if asked is None or not meets_itself(cfg):
        return None
    pruner = cfg.method.get("pruner")
    if str(cfg.method.kind) == "double" and str(pruner.kind) == "channel" and pruner.get("allocation") != "global":
        raise UserError("budget with method=double: its channel pruner must meet its share itself; give "
                        "method.pruner.allocation=global (or the default gate pruner, method.pruner=taylor_gates)")
    if asked[0] == "latency":
        raise UserError(f"budget.latency: method={cfg.method.name} chooses its structure while it trains, where no "
                        "model can be timed; give budget.macs or budget.params")
    return Target(asked[0], asked[1], float(cfg.budget.tolerance))


def apply(cfg: DictConfig, fraction: Callable[[DictConfig, str], float] = profile_fraction) -> tuple[DictConfig, dict]:
    """`cfg` with its method's knob set to meet the budget, and the record's `extra.budget` ({} without one, or
    when the method meets the budget itself: `target`)."""
    if meets_itself(cfg):
        target(cfg)  # its refusals, before anything runs
        return cfg, {}
    solution = solve(cfg, fraction)
    if solution is None:
        return cfg, {}
    out = copy.deepcopy(cfg)
    OmegaConf.update(out, solution.knob, solution.value, merge=False)
    return out, asdict(solution)


def check_met(met: dict, final: float | None, dense: float | None) -> None:
    """After training: the final model's cost (not the estimate that chose the knob) within the budget, else one
    line and no row (a structure chosen while training, e.g. CST's global ramp, can end above the profile's)."""
    if final is None or dense is None:  # latency: the record's own measurement stands
        return
    reached = final / dense
    if reached > met["budget"] + 1e-9:
        aimed = "" if met["achieved"] is None else f" ({met['knob']}={met['value']:g} was chosen for " \
                                                   f"{met['achieved']:.4f})"
        raise UserError(f"budget.{met['cost']}={met['budget']:g} was not met: the trained model keeps {reached:.4f} "
                        f"of the dense {met['cost']}{aimed}; nothing was recorded")
    met["achieved"] = reached
