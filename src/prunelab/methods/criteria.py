"""Filter-importance criteria (docs/design.md, "Criterion").

Every criterion has the signature

    scores(model, layers, batches, seed) -> {conv name: tensor[C_out]}

where `layers` are the `Member`s (conv + where its feature map is read) to score and
`batches` a list of (images, labels) on the model's device.  Higher means more
important; the method keeps the top-k of each group.  Adding a criterion is one
decorated function.

Activation criteria read the map A[n, c] (H x W) of image n and channel c where the
member says (post BN-ReLU; after the residual add for a ResNet block's second conv),
with the model in eval mode, in one pass over `batches` for all layers at once, and
average over the N images with float64 sums on the model's device:

    nuclear  (1/N) sum_n ||A[n, c]||_*     sum of singular values (energy-aware pruning,
                                            Yeom et al. 2021, docs/papers/energy_aware.md §2.1)
    hrank    (1/N) sum_n rank(A[n, c])     HRank (Lin et al. 2020)
    taylor   (1/N) sum_n |(1/HW) sum_hw A[n, c] * dl_n/dA[n, c]|   first-order Taylor
                                            (Molchanov et al. 2017), l_n = image n's loss
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.models.features import FeatureTap, eval_mode
from prunelab.surgery.groups import Member

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
Criterion = Callable[[nn.Module, Sequence[Member], Batches, int], dict[str, torch.Tensor]]
CRITERIA: dict[str, Criterion] = {}


def criterion(name: str, needs_data: bool = True) -> Callable[[Criterion], Criterion]:
    """Register a scoring function under `method.criterion: <name>`; `needs_data=False` skips loading images."""

    def add(fn: Criterion) -> Criterion:
        fn.needs_data = needs_data  # type: ignore[attr-defined]
        CRITERIA[name] = fn
        return fn

    return add


@criterion("l1", needs_data=False)
def l1(model: nn.Module, layers: Sequence[Member], batches: Batches, seed: int) -> dict[str, torch.Tensor]:
    """L1 norm of each filter's weights (Li et al. 2017): sum |W[c]|."""
    return {m.conv: model.get_submodule(m.conv).weight.detach().abs().flatten(1).sum(1) for m in layers}


@criterion("random", needs_data=False)
def random(model: nn.Module, layers: Sequence[Member], batches: Batches, seed: int) -> dict[str, torch.Tensor]:
    """Uniform random scores, reproducible from `seed` (the straw-man baseline)."""
    gen = torch.Generator().manual_seed(seed)
    return {m.conv: torch.rand(model.get_submodule(m.conv).out_channels, generator=gen) for m in layers}


def nuclear_norms(maps: torch.Tensor) -> torch.Tensor:
    """||A||_* = sum_i sigma_i(A) of every (H, W) matrix of `maps` (..., H, W) -> (...).

    One batched SVD (singular values only) over all maps; all-zero maps (dead channels,
    common after a ReLU) are 0 and are not decomposed.
    """
    return _on_nonzero_maps(maps, lambda m: torch.linalg.svdvals(m).sum(-1))


def matrix_ranks(maps: torch.Tensor) -> torch.Tensor:
    """rank(A) of every (H, W) matrix of `maps` (..., H, W) -> (...), as a float tensor.

    Tolerance sigma_max * max(H, W) * eps(dtype), the default of `torch.linalg.matrix_rank`
    and of the removed `torch.matrix_rank` that HRank called, so float32 maps give HRank's ranks.
    """
    return _on_nonzero_maps(maps, lambda m: torch.linalg.matrix_rank(m).to(m.dtype))


def _on_nonzero_maps(maps: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`fn` on the maps that have a nonzero entry, 0 for the others (exact for norms and ranks)."""
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = flat.new_zeros(len(flat))
    alive = flat.flatten(1).ne(0).any(1)
    if bool(alive.all()):
        out = _across_threads(fn, flat)
    elif bool(alive.any()):
        out[alive] = _across_threads(fn, flat[alive])
    return out.reshape(maps.shape[:-2])


def _across_threads(fn: Callable[[torch.Tensor], torch.Tensor], matrices: torch.Tensor) -> torch.Tensor:
    """`fn` of a batch of matrices; on CPU the batch is split over torch's intra-op threads.

    CPU LAPACK decomposes a batch of small matrices one after the other on one core; the
    chunks run in parallel threads (torch releases the GIL), each matrix is decomposed alone
    either way, so the result is identical.  On GPU the batched kernel is used as it is.
    """
    threads = torch.get_num_threads()
    if matrices.device.type != "cpu" or threads == 1 or len(matrices) < 2 * threads:
        return fn(matrices)
    return torch.cat(list(_pool(threads).map(fn, matrices.chunk(threads))))


@cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="prunelab-svd")


def _tapped(model: nn.Module, layers: Sequence[Member], fn: Callable[[Member, torch.Tensor], torch.Tensor | None]):
    """A `FeatureTap` on every member's feature module that calls `fn(member, output)` for each member read there."""
    readers: dict[str, list[Member]] = {}
    for member in layers:
        readers.setdefault(member.feature, []).append(member)

    def read(name: str, _m: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor | None:
        return [fn(member, out) for member in readers[name]][0]

    return FeatureTap(model, readers, read)


def _add(sums: dict[str, torch.Tensor], conv: str, value: torch.Tensor) -> None:
    sums[conv] = sums[conv] + value if conv in sums else value


@torch.no_grad()
def feature_statistic(
    model: nn.Module,
    layers: Sequence[Member],
    batches: Batches,
    per_map: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Mean over all images of `per_map(feature maps)` for every layer, from one pass over `batches`.

    `per_map` takes the (B, C, H, W) maps of one layer and returns (B, C) values.  All
    layers are hooked at once; sums are kept on the device in float64, so the result is
    the exact mean whatever the batch split.  The model runs in eval mode (running BN
    statistics, as HRank scores).  Maps are handed over in float32 (float64 models keep
    float64).
    """
    sums: dict[str, torch.Tensor] = {}
    seen = 0

    def record(member: Member, out: torch.Tensor) -> None:
        maps = torch.relu(out) if member.relu else out
        maps = maps if maps.dtype == torch.float64 else maps.float()
        _add(sums, member.conv, per_map(maps).double().sum(0))

    with _tapped(model, layers, record), eval_mode(model):
        for images, _ in batches:
            model(images)
            seen += len(images)
    return {conv: (total / max(seen, 1)).float() for conv, total in sums.items()}


@criterion("nuclear")
def nuclear(model: nn.Module, layers: Sequence[Member], batches: Batches, seed: int) -> dict[str, torch.Tensor]:
    """Energy-aware pruning's score: mean nuclear norm of each channel's feature map (module docstring)."""
    return feature_statistic(model, layers, batches, nuclear_norms)


@criterion("hrank")
def hrank(model: nn.Module, layers: Sequence[Member], batches: Batches, seed: int) -> dict[str, torch.Tensor]:
    """HRank's score: mean matrix rank of each channel's feature map (float32 maps, see `matrix_ranks`)."""
    return feature_statistic(model, layers, batches, matrix_ranks)


@criterion("taylor")
def taylor(model: nn.Module, layers: Sequence[Member], batches: Batches, seed: int) -> dict[str, torch.Tensor]:
    """First-order Taylor score (Molchanov et al. 2017): the loss change when a map is zeroed, to first order.

    Per image n and channel c: |mean over (h, w) of A * dl_n/dA|, with l_n image n's
    cross-entropy (the batch loss is summed, so each image's gradient is its own and the
    score does not depend on the batch split), averaged over the N images.  One forward
    and one backward pass per batch, eval mode; gradients are taken with respect to the
    maps only (no parameter gradients are accumulated).  A member read at a BN with
    `relu=True` uses A = relu(bn output) and the gradient at the BN output, which equals
    A * dl/dA when a ReLU follows.
    """
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    captured: list[tuple[Member, torch.Tensor]] = []

    def capture(member: Member, out: torch.Tensor) -> torch.Tensor:
        captured.append((member, out))
        return out.clone()  # the network goes on with a copy, so in-place ops after it keep `out` intact

    with _tapped(model, layers, capture), eval_mode(model), torch.enable_grad():
        for images, labels in batches:
            captured.clear()
            logits = model(images.detach().requires_grad_())
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
            grads = torch.autograd.grad(loss, [out for _, out in captured])
            for (member, out), grad in zip(captured, grads, strict=True):
                maps = torch.relu(out.detach()) if member.relu else out.detach()
                _add(sums, member.conv, (maps.double() * grad.double()).mean((2, 3)).abs().sum(0))
            seen += len(images)
    captured.clear()
    return {conv: (total / max(seen, 1)).float() for conv, total in sums.items()}
