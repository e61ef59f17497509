"""A tiny, deterministic, learnable image dataset for tests and smoke runs.

Every class has its own colour and its own coarse spatial pattern (a 4x4 grid of brighter
and darker cells, upsampled to the image size); an image is its class's colour plus its
pattern plus Gaussian pixel noise.  The colour alone survives cropping and flipping, so
a tiny CNN with global pooling separates the classes within a couple of epochs, while
the noise keeps the task from being solved by a single pixel.  Images take the same
uint8 path as CIFAR (in_memory.py), so tests exercise the real loader.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from prunelab.data.in_memory import InMemoryDataset
from prunelab.data.sharding import generator
from prunelab.errors import UserError

PATTERN_CELLS = 4  # the class pattern is a PATTERN_CELLS x PATTERN_CELLS grid
PATTERN_AMPLITUDE = 40.0  # grey levels added to / taken from the class colour
NOISE_STD = 24.0  # grey levels of per-pixel noise


def make_split(
    colours: torch.Tensor, patterns: torch.Tensor, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images (uint8, N x 3 x S x S) with balanced labels in a random order."""
    num_classes = len(colours)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    size = patterns.shape[-1]
    noise = torch.randn(n, 3, size, size, generator=gen) * NOISE_STD
    pixels = colours[labels, :, None, None] + PATTERN_AMPLITUDE * patterns[labels, None] + noise
    return pixels.round().clamp(0, 255).to(torch.uint8), labels


def build(cfg: DictConfig, device: torch.device) -> InMemoryDataset:
    """The synthetic dataset of `cfg` (keys num_train, num_test, image_size, num_classes, seed,
    generated_classes: the number of classes generated, null or absent: num_classes; set it to
    take a subset with `dataset.classes`, whose num_classes is then the subset's size)."""
    size = int(cfg.image_size)
    generated = cfg.get("generated_classes")
    key = "dataset.num_classes" if generated is None else "dataset.generated_classes"
    num_classes = int(cfg.num_classes if generated is None else generated)
    if size < PATTERN_CELLS or num_classes < 2 or cfg.num_train < 1 or cfg.num_test < 1:
        raise UserError(
            f"synthetic data needs dataset.image_size >= {PATTERN_CELLS}, {key} >= 2 and "
            f"dataset.num_train, dataset.num_test >= 1; got {size}, {num_classes}, {cfg.num_train}, {cfg.num_test}"
        )
    classes = generator(cfg.seed, "classes")
    colours = torch.rand(num_classes, 3, generator=classes) * 160 + 48
    cells = torch.randint(0, 2, (num_classes, 1, PATTERN_CELLS, PATTERN_CELLS), generator=classes) * 2.0 - 1
    patterns = F.interpolate(cells, size=(size, size), mode="nearest")[:, 0]
    train = make_split(colours, patterns, int(cfg.num_train), generator(cfg.seed, "train"))
    test = make_split(colours, patterns, int(cfg.num_test), generator(cfg.seed, "test"))
    return InMemoryDataset.from_config(cfg, train, test, device)
