"""The toy experiment of energy-aware pruning (docs/papers/energy_aware.md §5): which hidden units of a
small MLP on 2-D data can go without fine-tuning, by five criteria.

Setting (the paper gives none; we follow its first author's earlier toy pruning study, [R] choices
marked "ours"):

- data: `moons` (make_moons, noise 0.1), `circles` (make_circles, noise 0.1, factor 0.3) and
  `spiral` (4 classes; per class radius r = linspace(0, 1), angle t = linspace(4k, 4k + 4) + N(0, 0.2^2),
  x = (r sin t, r cos t));
- model: 2 -> 1000 -> 1000 -> 1000 -> classes, ReLU after each hidden layer, dropout 0.5 after the
  first (`relu_last=False` drops the third ReLU, a quirk of that study's code);
- criteria on n reference points drawn from the data distribution, one score per hidden unit j of
  layer l, with activation a = relu(z), z the unit's pre-activation and l_i point i's cross-entropy:

      nuclear   (1/n) sum_i |a_ij|             a dense unit's "map" is 1 x 1, so ||a||_* = |a| (spec §5)
      l1        sum_k |W_l[j, k]|              incoming weights ("weight" criterion, Li et al. 2017)
      gradient  (1/n) sum_i |dl_i/dz_ij|       (Sun et al. 2017)
      taylor    (1/n) sum_i |z_ij dl_i/dz_ij|  (Molchanov et al. 2017; = |a dl/da| for ReLU units)
      lrp       sum_i R_ij                     LRP (z+ rule) relevance of the true class's logit (Bach et al. 2015)

  then normalised per layer so that layers compete on one scale: l1 and lrp divided by the layer's
  sum, the others by the layer's L2 norm (as that study does; the paper's normalisation is unknown);
- pruning: the `fraction` (1/3) lowest-scoring hidden units of all layers together are removed at
  once (a unit's output is masked to zero, the same function as deleting its row, bias and the next
  layer's column), no fine-tuning; accuracy on the training data and on fresh test data.

Per-point absolute values (gradient, taylor) follow Molchanov et al.; that study's code takes the
absolute value of the mean over points instead.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import make_circles, make_moons
from torch import nn

from prunelab.errors import choose
from prunelab.methods.channel import top_k

TOY_DATASETS = {"moons": 2, "circles": 2, "spiral": 4}  # name -> classes
NOISE = 0.1  # moons and circles
SPIRAL_ANGLE_NOISE = 0.2


def toy_data(name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` points (float32, (n, 2)) and labels (int64) of a 2-D dataset, reproducible from `seed`."""
    choose("toy dataset", name, TOY_DATASETS)
    if name == "moons":
        x, y = make_moons(n_samples=n, noise=NOISE, random_state=seed)
    elif name == "circles":
        x, y = make_circles(n_samples=n, noise=NOISE, factor=0.3, random_state=seed)
    else:
        x, y = _spiral(n, TOY_DATASETS["spiral"], np.random.default_rng(seed))
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)


def _spiral(n: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms, ceil(n / classes) points each, then a random `n` of them."""
    m = math.ceil(n / classes)
    radius = np.tile(np.linspace(0.0, 1.0, m), classes)
    labels = np.repeat(np.arange(classes), m)
    angle = np.concatenate([np.linspace(4.0 * k, 4.0 * k + 4.0, m) for k in range(classes)])
    angle = angle + SPIRAL_ANGLE_NOISE * rng.standard_normal(len(angle))
    points = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    pick = rng.permutation(len(labels))[:n]
    return points[pick], labels[pick]


def reference_points(name: str, n: int, seed: int, pool: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` points drawn at random (seeded) from a fresh sample of `pool` points of the dataset."""
    x, y = toy_data(name, max(pool, n), seed)
    pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[pick], y[pick]


class ToyMLP(nn.Module):
    """2 -> width x 3 -> classes MLP with a 0/1 mask per hidden unit (1 = kept)."""

    def __init__(self, classes: int, width: int = 1000, dropout: float = 0.5, relu_last: bool = True) -> None:
        super().__init__()
        self.hidden = nn.ModuleList([nn.Linear(2, width), nn.Linear(width, width), nn.Linear(width, width)])
        self.out = nn.Linear(width, classes)
        self.dropout = nn.Dropout(dropout)
        self.relu_last = relu_last
        self.register_buffer("mask", torch.ones(len(self.hidden), width))

    def forward(self, x: torch.Tensor, record: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """Logits; with `record`, appends (pre-activation z, activation a) of every hidden layer."""
        for i, layer in enumerate(self.hidden):
            z = layer(x) * self.mask[i]
            a = torch.relu(z) if i < len(self.hidden) - 1 or self.relu_last else z
            if record is not None:
                record.append((z, a))
            x = self.dropout(a) if i == 0 else a
        return self.out(x)


def train_toy(model: ToyMLP, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int,
              lr: float = 1e-3, batch_size: int = 128) -> None:
    """Adam on shuffled mini-batches for `steps` steps (ours: the study's SGD recipe is far slower)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(y), (min(batch_size, len(y)),), generator=gen)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (%) in eval mode."""
    model.eval()
    return 100.0 * float((model(x).argmax(1) == y).double().mean())


UnitScore = Callable[[ToyMLP, torch.Tensor, torch.Tensor], list[torch.Tensor]]


def _per_point_gradients(model: ToyMLP, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(z, dl_i/dz) per hidden layer, l_i each point's own cross-entropy (eval mode)."""
    model.eval()
    record: list[tuple[torch.Tensor, torch.Tensor]] = []
    loss = F.cross_entropy(model(x, record), y, reduction="sum")
    grads = torch.autograd.grad(loss, [z for z, _ in record])
    return [(z.detach(), g) for (z, _), g in zip(record, grads, strict=True)]


def _nuclear(model: ToyMLP, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    record: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        model.eval()(x, record)
    return [a.abs().mean(0) for _, a in record]


def _l1(model: ToyMLP, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    return [layer.weight.detach().abs().sum(1) for layer in model.hidden]


def _gradient(model: ToyMLP, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    return [g.abs().mean(0) for _, g in _per_point_gradients(model, x, y)]


def _taylor(model: ToyMLP, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    return [(z * g).abs().mean(0) for z, g in _per_point_gradients(model, x, y)]


@torch.no_grad()
def _lrp(model: ToyMLP, x: torch.Tensor, y: torch.Tensor, eps: float = 1e-9) -> list[torch.Tensor]:
    """LRP z+ rule (alpha 1, beta 0): R_in = a * ((R_out / (a W+^T + eps)) @ W+), W+ = max(W, 0),
    from the true class's logit down; relevance passes ReLUs unchanged."""
    model.eval()
    record: list[tuple[torch.Tensor, torch.Tensor]] = []
    logits = model(x, record)
    relevance = logits * F.one_hot(y, logits.shape[1]).to(logits.dtype)
    scores = []
    for (_, a), layer in zip(reversed(record), [model.out, *reversed(model.hidden[1:])], strict=True):
        positive = layer.weight.clamp_min(0.0)
        relevance = a * ((relevance / (a @ positive.T + eps)) @ positive)
        scores.append(relevance.sum(0))
    return scores[::-1]


def _l2(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(1e-12)


def _sum(v: torch.Tensor) -> torch.Tensor:
    return v / v.sum().abs().clamp_min(1e-12)


# criterion -> (raw per-unit scores, per-layer normalisation)
TOY_CRITERIA: dict[str, tuple[UnitScore, Callable[[torch.Tensor], torch.Tensor]]] = {
    "nuclear": (_nuclear, _l2),
    "l1": (_l1, _sum),
    "gradient": (_gradient, _l2),
    "taylor": (_taylor, _l2),
    "lrp": (_lrp, _sum),
}


def unit_scores(model: ToyMLP, criterion: str, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """One normalised score per hidden unit and layer, from the reference points (x, y)."""
    raw, normalise = TOY_CRITERIA[choose("toy criterion", criterion, TOY_CRITERIA)]
    return [normalise(s.detach().double()) for s in raw(model, x, y)]


def prune_globally(model: ToyMLP, scores: list[torch.Tensor], fraction: float = 1 / 3) -> ToyMLP:
    """A copy of `model` without the round(fraction * units) lowest-scoring hidden units of all layers.

    Ties keep the earlier unit (layer by layer, then by index), as `top_k` does for filters.
    """
    flat = torch.cat(scores)
    kept = top_k(flat, len(flat) - round(fraction * len(flat)))
    mask = torch.zeros(len(flat))
    mask[kept] = 1.0
    pruned = copy.deepcopy(model)
    pruned.mask.copy_(mask.view_as(pruned.mask))
    return pruned


@torch.no_grad()
def decision_grid(model: nn.Module, x: torch.Tensor, resolution: int = 200,
                  margin: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted class on a resolution x resolution grid over the range of `x` (+ margin): (xs, ys, labels)."""
    low, high = x.min(0).values - margin, x.max(0).values + margin
    xs = torch.linspace(float(low[0]), float(high[0]), resolution)
    ys = torch.linspace(float(low[1]), float(high[1]), resolution)
    grid = torch.cartesian_prod(ys, xs).flip(1)  # (x, y) pairs, rows of constant y
    labels = torch.cat([model.eval()(part).argmax(1) for part in grid.split(8192)])
    return xs.numpy(), ys.numpy(), labels.view(resolution, resolution).numpy()
