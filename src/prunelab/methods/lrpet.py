"""`method=lrpet`: low-rank projection with energy transfer, trained from scratch (docs/papers/lrpet.md).

Guo, Lin, Chen, Xing, Liu, Xu, "Compact Model Training by Low-Rank Projection With Energy
Transfer", IEEE TNNLS 2024 (arXiv:2204.05566); official code BZQLin/LRPET.

    prepare   the rank plan: every ungrouped Conv2d (stem, 1x1 and downsample convs included,
              the classifier excluded) gets r = max(1, int(n - n*g)), n = min(Cout, Cin*k*k)
              (LRPET §2.2), or the rank from `method.ranks`; its BN comes from the forward
              graph (`conv_bn_pairs`), not from module order (§2.4 v, §5.3).
    stage     one "scratch" stage with the `LRPETProjection` callback: the full-rank weights are projected to rank r with energy
              transfer and BN rectification (§2.3-2.4) after the last step of every epoch
              (CIFAR) or every `project_every` steps (ImageNet: 250) (§2.5).
    finalize  each conv becomes a k x k conv with r filters + a 1x1 conv, no fine-tuning (§2.6);
              dead layers become zero branches, never identities (§5.8).

Deviation from the official CIFAR script: the loop evaluates after `on_epoch_end`, so every
epoch's test accuracy is the projected (= exportable) model's, and the reported accuracy is
the exported model's at the final epoch (§5.4), not the best unprojected epoch of 300-399.
Grouped convs (groups > 1) are left dense: their matrix view does not factor into one conv pair.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunelab.errors import UserError
from prunelab.layers.lowrank import factorise, to_lowrank
from prunelab.layers.matrix import conv_matrix, shape_groups, thin_svd
from prunelab.measure import count
from prunelab.methods.base import Context, Method, register
from prunelab.models.structure import conv_bn_pairs
from prunelab.train.callbacks import Callback, TrainState

SVD_DTYPES = {"float64": torch.float64, "float32": torch.float32}
TRANSFERS = ("scale", "additive", "none")


def rank_for(n: int, g: float) -> int:
    """Kept rank r = int(n - n*g) (float64, truncation toward zero), at least 1 (LRPET §2.2).

    `n` = min(Cout, Cin*k*k) singular values, `g` = fraction removed.  Literal float
    arithmetic, as the official code: rank_for(450, 0.54) == 206, not 207.
    """
    return max(1, int(n - n * g))


def bn_row_scale(bn: _BatchNorm) -> torch.Tensor:
    """a = gamma / sqrt(running_var + eps): the per-channel row scale BN folds into the conv (LRPET §2.4)."""
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)


def energy_transfer(s: torch.Tensor, ranks: torch.Tensor, mode: str = "scale", redu_fac: float = 0.0) -> torch.Tensor:
    """New singular values s' (..., k) for descending `s` and kept ranks `ranks` (...) (LRPET §2.3).

    The tail i > r becomes rho*s_i (rho = `redu_fac`, 0 = truncation).  The head i <= r:
      scale    (official code): s'_i = sqrt(alpha) s_i, alpha = (sum s^2 - rho^2 sum_tail s^2) / sum_head s^2,
               one common factor, so sum s'^2 == sum s^2;
      additive (ablation): s'_i^2 = s_i^2 + (1 - rho^2) sum_tail s^2 / r, equal shares, same energy;
      none     : s'_i = s_i (plain Eckart-Young truncation; energy drops).
    """
    if mode not in TRANSFERS:
        raise ValueError(f"energy transfer must be one of {TRANSFERS}, got {mode!r}")
    head = torch.arange(s.shape[-1], device=s.device) < ranks.unsqueeze(-1)
    sq = s.square()
    head_energy = (sq * head).sum(-1, keepdim=True)
    tail_energy = sq.sum(-1, keepdim=True) - head_energy
    tail = redu_fac * s
    if mode == "none":
        kept = s
    elif mode == "scale":
        alpha = (head_energy + (1.0 - redu_fac**2) * tail_energy) / head_energy.clamp_min(torch.finfo(s.dtype).tiny)
        kept = s * alpha.sqrt()
    else:
        r = ranks.unsqueeze(-1).to(s.dtype)
        kept = (sq + (1.0 - redu_fac**2) * tail_energy / r).sqrt()
    return torch.where(head, kept, tail)


def project(
    m: torch.Tensor,
    ranks: torch.Tensor | int,
    row_scale: torch.Tensor | None = None,
    *,
    transfer: str = "scale",
    redu_fac: float = 0.0,
    bn_eps: float = 1e-5,
    dead_threshold: float = 1e-4,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Rank-`ranks` projection with energy transfer of a matrix or a stack (B, m, n) (LRPET §2.3-2.4).

    Without `row_scale`: M' = U diag(s') Vh with s' from `energy_transfer`.  With the BN
    row scale a (B, m): project the folded matrix diag(a) M, then map back with the damped
    inverse diag(a / (a^2 + bn_eps)) (the official code's eps_set; exact only for
    a^2 >> bn_eps).  A matrix whose (folded) s1 is below `dead_threshold` is returned
    unchanged, as the official code skips it.  The SVD runs in `dtype`; the result has m's dtype.
    """
    work = m.to(dtype)
    if row_scale is not None:
        a = row_scale.to(dtype).unsqueeze(-1)
        work = a * work
    u, s, vh = thin_svd(work, dtype)
    ranks = torch.as_tensor(ranks, device=m.device).expand(s.shape[:-1])
    out = u @ (energy_transfer(s, ranks, transfer, redu_fac).unsqueeze(-1) * vh)
    if row_scale is not None:
        out = a / (a.square() + bn_eps) * out
    dead = (s[..., 0] < dead_threshold)[..., None, None]
    return torch.where(dead, m.to(dtype), out).to(m.dtype)


@dataclass(frozen=True)
class ConvPlan:
    """One constrained conv: its kept rank r of n = min(Cout, Cin*k*k), and its BN (None: projected plainly)."""

    name: str
    rank: int
    n: int
    bn: str | None


@dataclass(frozen=True)
class Projection:
    """How a projection is computed (LRPET §2.3-2.4); see conf/method/lrpet.yaml for each key."""

    transfer: str = "scale"
    redu_fac: float = 0.0
    bn_rectify: bool = True
    bn_eps: float = 1e-5
    dead_threshold: float = 1e-4
    dtype: torch.dtype = torch.float64


def plan_ranks(
    model: nn.Module,
    input_shape: tuple[int, ...],
    rank_ratio: float | None,
    ranks: list[int] | None = None,
    floors: tuple[int | None, int | None] = (None, None),
) -> list[ConvPlan]:
    """The rank of every ungrouped Conv2d, in `named_modules` order (LRPET §2.2).

    `ranks` (the "-S" rows) replaces the `rank_ratio` rule; `floors` = (first conv, others)
    are VGG-16's lower clamps (official: 18, 43), capped at n.
    """
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    if ranks is not None and len(ranks) != len(convs):
        raise UserError(
            f"method.ranks has {len(ranks)} entries but {type(model).__name__} has {len(convs)} convolutions "
            f"(in named_modules order): give {len(convs)} ranks"
        )
    pairs = conv_bn_pairs(model, input_shape)
    plan = []
    for i, (name, conv) in enumerate(convs):
        n = min(conv.out_channels, conv.weight[0].numel())
        if ranks is not None:
            rank = int(ranks[i])
            if not 1 <= rank <= n:
                raise UserError(f"method.ranks[{i}]={rank} for {name}: must be in [1, {n}] (min(Cout, Cin*k*k))")
        else:
            rank = rank_for(n, rank_ratio)
            floor = floors[0] if i == 0 else floors[1]
            if floor is not None:
                rank = min(n, max(rank, floor))
        bn = pairs.get(name)
        if bn is not None and model.get_submodule(bn).num_features != conv.out_channels:
            raise ValueError(f"{bn} does not normalise the {conv.out_channels} output channels of {name}")
        plan.append(ConvPlan(name, rank, n, bn))
    return plan


def _stacks(model: nn.Module, plan: list[ConvPlan], bn_rectify: bool):
    """(plans, convs, stacked matrices, stacked BN row scales or None) per group of equal shapes."""
    by_name = {p.name: p for p in plan}
    convs = {p.name: model.get_submodule(p.name) for p in plan}
    paired = {
        p.name: bn_rectify and p.bn is not None and model.get_submodule(p.bn).running_var is not None for p in plan
    }
    for names in shape_groups(convs, paired):
        group = [by_name[n] for n in names]
        mats = torch.stack([conv_matrix(convs[n]) for n in names])
        scale = torch.stack([bn_row_scale(model.get_submodule(p.bn)) for p in group]) if paired[names[0]] else None
        yield group, [convs[n] for n in names], mats, scale


@torch.no_grad()
def project_model(model: nn.Module, plan: list[ConvPlan], how: Projection) -> None:
    """Project every planned conv of `model` in place, one batched SVD per weight shape, on its device."""
    for group, convs, mats, scale in _stacks(model, plan, how.bn_rectify):
        ranks = torch.tensor([p.rank for p in group], device=mats.device)
        new = project(mats, ranks, scale, transfer=how.transfer, redu_fac=how.redu_fac, bn_eps=how.bn_eps,
                      dead_threshold=how.dead_threshold, dtype=how.dtype)
        for conv, m in zip(convs, new):
            conv.weight.copy_(m.view(conv.weight.shape))
            if dist.is_available() and dist.is_initialized():  # BN statistics differ per rank: rank 0 decides
                dist.broadcast(conv.weight, 0)


@torch.no_grad()
def dead_layers(model: nn.Module, plan: list[ConvPlan], how: Projection) -> list[str]:
    """Convs whose (BN-folded) largest singular value is below `dead_threshold`: the projection's skip rule."""
    dead = []
    for group, _, mats, scale in _stacks(model, plan, how.bn_rectify):
        folded = mats.to(how.dtype) if scale is None else scale.to(how.dtype).unsqueeze(-1) * mats.to(how.dtype)
        s1 = torch.linalg.matrix_norm(folded, ord=2)
        dead += [p.name for p, d in zip(group, (s1 < how.dead_threshold).tolist()) if d]
    return dead


class LRPETProjection(Callback):
    """Projects the model every `every` optimizer steps of an epoch (0: never mid-epoch) and after each
    epoch's last step (always when `every` is 0; with `at_epoch_end` otherwise) (LRPET §2.5)."""

    def __init__(self, plan: list[ConvPlan], how: Projection, every: int = 0, at_epoch_end: bool = True) -> None:
        self.plan, self.how, self.every, self.at_epoch_end = plan, how, every, at_epoch_end
        self.projections = 0
        self.seconds = 0.0
        self._last_step = -1

    def on_step_end(self, state: TrainState) -> None:
        if self.every and state.step_in_epoch % self.every == 0:
            self._project(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if (self.every == 0 or self.at_epoch_end) and state.step != self._last_step:
            self._project(state)

    def _project(self, state: TrainState) -> None:
        started = time.perf_counter()
        project_model(state.model, self.plan, self.how)
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)
        self.seconds += time.perf_counter() - started
        self.projections += 1
        self._last_step = state.step

    def state_dict(self) -> dict[str, Any]:
        return {"projections": self.projections, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.projections, self.seconds = int(state["projections"]), float(state["seconds"])


def _check(cfg: DictConfig, ranks: list[int] | None, floors: tuple[int | None, ...]) -> Projection:
    """The projection settings of the method config (each key's rule: `validate.METHOD_KINDS`), after the check
    that ties two keys: explicit ranks replace the rank_ratio rule that the floors clamp."""
    if ranks is not None and floors != (None, None):
        raise UserError("method.rank_floor_first/rank_floor clamp the rank_ratio rule: unset them with method.ranks")
    return Projection(
        transfer=str(cfg.energy_transfer),
        redu_fac=float(cfg.redu_fac),
        bn_rectify=bool(cfg.bn_rectify),
        bn_eps=float(cfg.bn_eps),
        dead_threshold=float(cfg.dead_threshold),
        dtype=SVD_DTYPES[str(cfg.svd_dtype)],
    )


@register("lrpet")
class LRPET(Method):
    """LRPET: train from scratch with periodic low-rank projection, export the two-conv compact model."""

    trains_from_scratch = True

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.ranks = None if cfg.ranks is None else [int(r) for r in cfg.ranks]
        self.floors = tuple(None if f is None else int(f) for f in (cfg.rank_floor_first, cfg.rank_floor))
        self.how = _check(cfg, self.ranks, self.floors)
        self.plan: list[ConvPlan] | None = None
        self.projector: LRPETProjection | None = None

    @property
    def target(self) -> str:
        if self.ranks is not None:
            return f"ranks=list({len(self.ranks)})"
        floors = "" if self.floors == (None, None) else f",floor={self.floors[0]}/{self.floors[1]}"
        return f"g={float(self.cfg.rank_ratio):g}{floors}{self.ablation}"

    @property
    def ablation(self) -> str:
        """The options that depart from the paper's method, as the label shows them (nothing for the method)."""
        off = [f"energy_transfer={self.how.transfer}"] if self.how.transfer != "scale" else []
        off += ["bn_rectify=false"] if not self.how.bn_rectify else []
        off += [f"redu_fac={self.how.redu_fac:g}"] if self.how.redu_fac else []
        return "".join(f"; {part}" for part in off)

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Fix the rank plan (once, before training); the model is unchanged."""
        rank_ratio = None if self.ranks is not None else float(self.cfg.rank_ratio)
        self.plan = plan_ranks(model, tuple(ctx.data.input_shape), rank_ratio, self.ranks, self.floors)
        ctx.extra.update(
            rank_ratio=rank_ratio, ranks=[p.rank for p in self.plan], energy_transfer=self.how.transfer,
            bn_rectify=self.how.bn_rectify, redu_fac=self.how.redu_fac, project_every=int(self.cfg.project_every),
            constrained_convs=len(self.plan), bn_paired_convs=sum(p.bn is not None for p in self.plan),
        )
        return model

    def callbacks(self, ctx: Context) -> list[Callback]:
        if self.plan is None:
            raise RuntimeError("LRPET.callbacks needs the rank plan: call prepare(model, ctx) first")
        every, at_end = int(self.cfg.project_every), bool(self.cfg.project_at_epoch_end)
        self.projector = LRPETProjection(self.plan, self.how, every, at_end)
        return [self.projector]

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Export the compact model: one `LowRankConv2d` per conv, `ZeroConv2d` per dead conv (LRPET §2.6)."""
        if self.plan is None:
            self.prepare(model, ctx)
        shape = tuple(ctx.data.input_shape)
        ranks = {p.name: p.rank for p in self.plan}
        dead = dead_layers(model, self.plan, self.how)
        nominal = count(to_lowrank(copy.deepcopy(model), ranks), shape)
        factorise(model, ranks, dead, self.how.dtype)
        exported = count(model, shape)
        ctx.extra.update(
            nominal_macs=nominal.macs, nominal_params_no_bn=nominal.params_no_bn, nominal_params=nominal.params,
            export_macs=exported.macs, export_params_no_bn=exported.params_no_bn, export_params=exported.params,
            dead_layers=len(dead), dead_layer_names=dead,
        )
        if self.projector is not None:
            ctx.extra.update(projections=self.projector.projections, projection_time_s=self.projector.seconds)
        return model
