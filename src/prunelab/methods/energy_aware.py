"""Energy-aware pruning (Yeom, Shim, Hwang, arXiv:2103.10858; docs/papers/energy_aware.md): where its pieces live.

- the score, mean nuclear norm of each filter's feature map, and the criteria it is compared with
  (L1, random, HRank, first-order Taylor): `methods/criteria.py`, used by the channel-pruning
  method (`method=nuclear|l1|random|hrank|taylor`, `methods/channel.py`);
- the toy experiment (2-D data, an MLP, per-unit criteria, no fine-tuning): `energy_aware_toy.py`;
- this module: the stability of the scores to the images used for scoring (spec §5, "data size /
  data quality"): scores from few or corrupted images against scores from many clean ones.

Agreement measures, per scored layer (conv) or prunable group:

    spearman, kendall   rank correlation of a layer's filter scores with the reference scores
    jaccard             |K ∩ K_ref| / |K ∪ K_ref| of the kept sets at the configured rates
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace

import torch
from scipy import stats

from prunelab.methods.channel import group_score, top_k
from prunelab.methods.criteria import CRITERIA, Batches
from prunelab.surgery import ChannelGroup, Member, kept_count


def scored_members(groups: Sequence[ChannelGroup], rates: Sequence[float], pre_add: bool = False) -> list[Member]:
    """The members the channel method scores: those of groups with a rate > 0 (`pre_add`: read ResNet conv2 before the add)."""
    return [replace(m, feature=m.pre_add) if pre_add and m.pre_add else m
            for g in groups if rates[g.slot] > 0 for m in g.members]


def score(model: torch.nn.Module, criterion: str, members: Sequence[Member], batches: Batches,
          seed: int = 0) -> dict[str, torch.Tensor]:
    """{conv: scores} of a registered criterion (criteria.CRITERIA)."""
    return CRITERIA[criterion](model, members, batches, seed)


def kept_sets(groups: Sequence[ChannelGroup], rates: Sequence[float],
              scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The channels the method would keep in each pruned group, exactly as `ChannelPruning.prepare` picks them."""
    return {g.name: top_k(group_score(g, scores), kept_count(g.channels, rates[g.slot]))
            for g in groups if rates[g.slot] > 0}


def image_range(batches: Batches, start: int, stop: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Images start..stop-1 of the stream `batches`, in batches (prefixes make nested image sets)."""
    out, offset = [], 0
    for images, labels in batches:
        lo, hi = max(start - offset, 0), min(stop - offset, len(labels))
        if lo < hi:
            out.append((images[lo:hi], labels[lo:hi]))
        offset += len(labels)
    return out


def prefix_scores(model: torch.nn.Module, criterion: str, members: Sequence[Member], batches: Batches,
                  sizes: Sequence[int], seed: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    """{N: scores from the first N images} for every N in `sizes`, scoring each image once.

    Activation criteria are means over images, so the first N images' score is the
    size-weighted mean of the scores of consecutive chunks [0, N_1), [N_1, N_2), ...
    """
    out: dict[int, dict[str, torch.Tensor]] = {}
    sums: dict[str, torch.Tensor] = {}
    done = 0
    for n in sorted(set(sizes)):
        chunk = score(model, criterion, members, image_range(batches, done, n), seed)
        for conv, value in chunk.items():
            part = value.double() * (n - done)
            sums[conv] = sums[conv] + part if conv in sums else part
        done = n
        out[n] = {conv: (total / n).float() for conv, total in sums.items()}
    return out


def with_noise(batches: Batches, sigma: float, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches plus Gaussian noise N(0, sigma^2) on every (normalised) pixel, reproducible from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    return [(images + sigma * torch.randn(images.shape, generator=gen).to(images.device, images.dtype), labels)
            for images, labels in batches]


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two index sets."""
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / max(len(sa | sb), 1)


def agreement(scores: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], groups: Sequence[ChannelGroup],
              rates: Sequence[float]) -> list[dict[str, object]]:
    """Tidy rows {layer, metric, value}: Spearman and Kendall per scored conv, Jaccard per pruned group.

    A correlation is NaN when either score vector is constant (e.g. HRank on one image of a
    full-rank layer).
    """
    rows: list[dict[str, object]] = []
    for conv, ref in reference.items():
        a, b = scores[conv].double().cpu().numpy(), ref.double().cpu().numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            rho, tau = stats.spearmanr(a, b).statistic, stats.kendalltau(a, b).statistic
        rows.append({"layer": conv, "metric": "spearman", "value": float(rho)})
        rows.append({"layer": conv, "metric": "kendall", "value": float(tau)})
    kept, kept_ref = kept_sets(groups, rates, scores), kept_sets(groups, rates, reference)
    rows += [{"layer": name, "metric": "jaccard", "value": jaccard(kept[name], kept_ref[name])} for name in kept_ref]
    return rows
