"""CIFAR-10 and CIFAR-100 read from the official "python version" pickles.

We read the pickles ourselves instead of going through torchvision's `CIFAR10`, because
torchvision verifies the md5 sums of the full archive and so rejects subsets and
re-packed copies; our reader accepts any number of rows per file.  torchvision is used
only to download and extract the archive when `dataset.download=true`.

Each batch file is a pickled dict with `data` (uint8, N x 3072: 1024 red, then 1024
green, then 1024 blue values of a 32x32 image, row-major) and `labels` (CIFAR-10) or
`fine_labels` (CIFAR-100).  Files pickled by Python 2 (the official ones) have bytes
keys, re-pickled copies have str keys; both are accepted.  A pickle can run code when
loaded, so the batches are read by `SafeUnpickler`, which admits only the classes the
official files need to rebuild a numpy array (any other reference is refused).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from prunelab.data import options
from prunelab.data.in_memory import InMemoryDataset
from prunelab.errors import UserError


@dataclass(frozen=True)
class Layout:
    """Where one CIFAR variant keeps its files and labels."""

    folder: str  # the folder the official archive extracts to
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    title: str  # how errors name the dataset
    num_classes: int  # labels are 0 .. num_classes - 1
    torchvision_class: str  # used only to download


LAYOUTS = {
    "cifar10": Layout(
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        label_key="labels",
        title="CIFAR-10",
        num_classes=10,
        torchvision_class="CIFAR10",
    ),
    "cifar100": Layout(
        folder="cifar-100-python",
        train=("train",),
        test=("test",),
        label_key="fine_labels",
        title="CIFAR-100",
        num_classes=100,
        torchvision_class="CIFAR100",
    ),
}


# (module, name) of everything a CIFAR batch pickle references: numpy's array reconstruction (module
# renamed in numpy 2) and the bytes helper Python 3 pickles at protocol 2 use
PICKLE_GLOBALS = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside `PICKLE_GLOBALS` (no code runs from a crafted file)."""

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR batch never does")
        return super().find_class(module, name)


def read_batch(path: Path, label_key: str, layout: Layout | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file as uint8 images (N, 3, 32, 32) and int64 labels (N,); with `layout`, labels outside its
    classes are refused (the file is not of that dataset)."""
    try:
        with path.open("rb") as f:
            raw = SafeUnpickler(f, encoding="bytes").load()
        batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in raw.items()}
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as err:
        raise UserError(f"{path} is not a readable pickle ({err}): replace it with the official file") from err
    data, labels = np.asarray(batch.get("data")), batch.get(label_key)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels is None or len(labels) != len(data):
        raise UserError(
            f"{path} is not a CIFAR python batch (uint8 'data' of N x 3072 and N '{label_key}'): "
            "replace it with the official file"
        )
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if layout is not None and len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < layout.num_classes:
        bad = next(int(y) for y in labels if not 0 <= y < layout.num_classes)
        raise UserError(
            f"{path} has the label {bad}, outside the {layout.num_classes} classes (0-{layout.num_classes - 1}) of "
            f"{layout.title}: the file is not a {layout.title} batch; replace it with the official file"
        )
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), labels


def read_batches(folder: Path, files: tuple[str, ...], layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch `files` of `layout` in `folder`, concatenated in order."""
    images, labels = zip(*(read_batch(folder / name, layout.label_key, layout) for name in files))
    return torch.cat(images), torch.cat(labels)


def locate(root: Path, layout: Layout) -> Path | None:
    """The folder holding all of `layout`'s files: `root/<layout.folder>` or `root` itself."""
    for folder in (root / layout.folder, root):
        if all((folder / name).is_file() for name in layout.train + layout.test):
            return folder
    return None


def download(root: Path, name: str, layout: Layout) -> None:
    """Download and extract the official archive into `root` with torchvision."""
    from filelock import FileLock
    from torchvision import datasets  # imported here: only a download needs it

    root.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(root / f".{layout.folder}.download.lock")):  # parallel sweep jobs download once
            if locate(root, layout) is None:
                getattr(datasets, layout.torchvision_class)(str(root), train=True, download=True)
    except Exception as err:  # no network, a proxy, a full disk: all end the same way
        raise UserError(
            f"could not download {name} to {root / layout.folder} ({type(err).__name__}: {err}); "
            f"on a machine without internet copy the extracted '{layout.folder}' folder there "
            f"or set dataset.root=PATH to a folder containing it"
        ) from err


def build(cfg: DictConfig, device: torch.device) -> InMemoryDataset:
    """CIFAR-10/100 from `dataset.root`, downloaded first when absent and `dataset.download` is set."""
    name, root = str(cfg.name), options.root(cfg)
    layout = LAYOUTS[name]
    folder = locate(root, layout)
    if folder is None and cfg.download:
        download(root, name, layout)
        folder = locate(root, layout)
    if folder is None:
        raise UserError(
            f"{name} not found: looked for {', '.join(layout.train + layout.test)} in {root / layout.folder} "
            f"and {root}; set dataset.root=PATH to a folder containing '{layout.folder}', "
            f"or dataset.download=true to download it there"
        )
    train = read_batches(folder, layout.train, layout)
    test = read_batches(folder, layout.test, layout)
    return InMemoryDataset.from_config(cfg, train, test, device)
