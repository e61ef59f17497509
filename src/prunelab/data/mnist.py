"""MNIST read from the four official idx files.

Like cifar.py, we read the files ourselves (any number of rows, plain or gzip-compressed)
and use torchvision only to download them when `dataset.download=true`:
`torchvision.datasets.MNIST(root, download=True)` puts them into `root/MNIST/raw/`.  We look
for them in `root/MNIST/raw/` and then in `root` itself; each of the four files may be
plain or `.gz` (the plain one is read when both exist; a gzip stream is recognised by its
content, whatever the file's name).

The idx format (big-endian): a 4-byte magic number 0x00 0x00 <type> <ndim> (type 0x08:
unsigned bytes), then ndim 4-byte sizes, then the values in row-major order.  Images are
0x00000803 (N x rows x cols), labels 0x00000801 (N).  The magic number, the sizes against
the file's length, and the agreement of the image and label counts are checked; a file that
fails is named in a one-line error.  Images come out as uint8 (N, 1, rows, cols).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from prunelab.data import options
from prunelab.data.in_memory import InMemoryDataset
from prunelab.errors import UserError

FOLDER = Path("MNIST") / "raw"  # where torchvision's MNIST(root, download=True) puts the files, under root
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NAMES = tuple(name for pair in FILES.values() for name in pair)
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
GZIP_MAGIC = b"\x1f\x8b"
FIX = "replace it with the official file"


def find(folder: Path, name: str) -> Path | None:
    """`folder/name`, else `folder/name.gz`, else None."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of the idx file `path` (plain or .gz), whose magic number must be `magic`."""
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:  # by content, not by name: idx files start with two zero bytes
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} is not readable ({type(err).__name__}: {err}): {FIX}") from err
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        seen = f"0x{found:08x}" if found is not None else f"only {len(raw)} bytes"
        raise UserError(
            f"{path} is not an idx file of {ndim}-d unsigned bytes (magic 0x{magic:08x}, got {seen}): {FIX}"
        )
    if len(raw) < header:
        raise UserError(f"{path} is truncated: its header needs {header} bytes, the file has {len(raw)}: {FIX}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise UserError(
            f"{path} has {len(raw) - header} bytes of values but its header says {'x'.join(map(str, shape))} "
            f"= {size}: {FIX}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_split(folder: Path, images_name: str, labels_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as uint8 images (N, 1, rows, cols) and int64 labels (N,)."""
    images_path, labels_path = find(folder, images_name), find(folder, labels_name)
    assert images_path is not None and labels_path is not None  # locate() found them
    images, labels = read_idx(images_path, IMAGES_MAGIC), read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise UserError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels: "
            "replace them with the official files"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def locate(root: Path) -> Path | None:
    """The folder holding all four files (plain or .gz): `root/MNIST/raw` or `root` itself."""
    for folder in (root / FOLDER, root):
        if all(find(folder, name) is not None for name in NAMES):
            return folder
    return None


def download(root: Path) -> None:
    """Download the four files into `root/MNIST/raw` with torchvision."""
    from filelock import FileLock
    from torchvision import datasets  # imported here: only a download needs it

    root.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(root / ".MNIST.download.lock")):  # parallel sweep jobs download once
            if locate(root) is None:
                datasets.MNIST(str(root), train=True, download=True)
    except Exception as err:  # no network, a proxy, a full disk: all end the same way
        reason = " ".join(f"{type(err).__name__}: {err}".split())  # torchvision's message spans lines
        raise UserError(
            f"could not download mnist to {root / FOLDER} ({reason}); on a machine without internet "
            f"set dataset.download=false and dataset.root=PATH to a folder holding {', '.join(NAMES)} "
            "(each may be .gz)"
        ) from err


def build(cfg: DictConfig, device: torch.device) -> InMemoryDataset:
    """MNIST from `dataset.root`, downloaded first when absent and `dataset.download` is set."""
    root = options.root(cfg)
    folder = locate(root)
    if folder is None and cfg.download:
        download(root)
        folder = locate(root)
    if folder is None:
        raise UserError(
            f"mnist not found: looked for {', '.join(NAMES)} (each may be .gz) in {root / FOLDER} and {root}; "
            "set dataset.root=PATH to a folder containing them, or dataset.download=true to download them there"
        )
    train, test = (read_split(folder, *FILES[split]) for split in ("train", "test"))
    return InMemoryDataset.from_config(cfg, train, test, device)
