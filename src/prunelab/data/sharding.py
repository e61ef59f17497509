"""Which samples a rank visits in an epoch, as a pure function of (seed, epoch, rank).

Both loaders (in-memory tensors and image folders) draw their order here, so a resumed
run and an uninterrupted one see the same batches, and every loader shards the same way:

- training (shuffled): one permutation per epoch, shared by all ranks, padded by repeating
  its head to a multiple of `world_size`; rank r takes every world_size-th entry starting
  at r.  Shards are disjoint up to the padding and all ranks run the same number of steps
  (the `DistributedSampler` scheme, so DDP's collectives never wait on a missing rank).
- evaluation (fixed order): rank r takes `range(r, n, world_size)`.  No padding, so the
  shards cover every sample exactly once and accuracy summed over ranks is exact; ranks
  may differ by one sample, so evaluation must reduce counts once at the end rather than
  per batch.

The validation split is drawn here too (`holdout`): once, before any loader exists, from
its own seed `dataset.val_seed`, so it is the same for every run seed of a sweep.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed determined by `parts`, stable across processes and Python versions.

    Hashing (rather than e.g. `seed + epoch`) keeps the streams of neighbouring seeds,
    epochs and ranks unrelated.
    """
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: int | str) -> torch.Generator:
    """A CPU generator seeded by `derive_seed(*parts)`."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def shard_indices(
    n: int, *, shuffle: bool, seed: int, epoch: int, rank: int, world_size: int
) -> torch.Tensor:
    """Indices (int64, CPU) of the `n` samples that `rank` visits in `epoch`, in order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if not shuffle:
        return torch.arange(rank, n, world_size)
    order = torch.randperm(n, generator=generator(seed, epoch, "order"))
    total = -(-n // world_size) * world_size
    order = order.repeat(-(-total // n))[:total]
    return order[rank::world_size]


def holdout(n: int, n_val: int, seed: int, stream: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (int64, CPU) of the training and the validation split of `n` training rows.

    The rule: `perm = torch.randperm(n, generator=generator(seed, stream))` (stream "val"
    for the validation split); the validation split is the rows `perm[:n_val]`, the training
    split the rows `perm[n_val:]`, each sorted into ascending original row order.  The two
    are disjoint and together are `range(n)`.  Callers skip the call when `n_val` is 0, so
    that the training split stays as it was.  digits.py draws its test split the same way
    from the stream "digits".
    """
    if not 0 <= n_val <= n:
        raise ValueError(f"cannot hold out {n_val} of {n} rows")
    perm = torch.randperm(n, generator=generator(seed, stream))
    return perm[n_val:].sort().values, perm[:n_val].sort().values
