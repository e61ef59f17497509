"""`method=svd`: any channel pruner, then truncated-SVD factorisation of every conv, then fine-tuning.

Composition by delegation (docs/design.md, "Composition"): `method.pruner` holds a channel
pruner's config (conf/method/svd.yaml: `/method@pruner: l1`; `method.pruner=nuclear` or
`method@method.pruner=nuclear` picks another).  `prepare` lets the pruner remove filters, then
replaces every ungrouped Conv2d of the pruned network (stem, 1x1 and downsample convs included;
the classifier is a Linear and stays) by its rank-r truncated SVD, a k x k conv with r filters
followed by a 1x1 conv (`layers.lowrank.factorise`), with LRPET's rank rule
r = max(1, int(n - n*g)), n = min(Cout, Cin*k*k), g = `method.rank_ratio` (docs/papers/lrpet.md
§2.2).  The default stage fine-tunes the factorised network with the run's trainer; `finalize`
is the pruner's.  The record's label is `svd(<pruner>)`.

This is post-hoc low-rank factorisation of a pruned network: the same export LRPET uses, without
LRPET's training-time projection, so the two can be compared at equal ranks.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from prunelab.layers.lowrank import factorise
from prunelab.methods.base import Composite, Context, register
from prunelab.methods.lrpet import SVD_DTYPES, plan_ranks


@register("svd")
class PrunedSVD(Composite):
    """A channel pruner's model, factorised by truncated SVD (module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.dtype = SVD_DTYPES[str(cfg.svd_dtype)]

    @property
    def own_target(self) -> str:
        return f"g={float(self.cfg.rank_ratio):g}"

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        model = super().prepare(model, ctx)
        plan = plan_ranks(model, tuple(ctx.data.input_shape), float(self.cfg.rank_ratio))
        ranks = {p.name: p.rank for p in plan}
        ctx.extra.update(rank_ratio=float(self.cfg.rank_ratio), ranks=list(ranks.values()))
        return factorise(model, ranks, dtype=self.dtype)
