"""Data layer: CIFAR pickle and MNIST idx readers, scikit-learn digits, on-device augmentation, sharding,
folders, synthetic data; class subsets and on-device resizing of in-memory datasets."""

from __future__ import annotations

import gzip
import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torchvision.transforms import functional as TF

from prunelab.data import Loader, build_dataset, mnist
from prunelab.data.base import class_list
from prunelab.data.in_memory import InMemoryDataset, random_like
from prunelab.data.sharding import generator
from prunelab.errors import UserError

CONF = Path(__file__).parents[1] / "conf"
SUBSET = (Path(__file__).parents[1] / "../shared/data/cifar-10-subset").resolve()
CPU = torch.device("cpu")


GREY = ("mnist", "digits")  # their configs repeat the grey channel 3 times; the tests read the native images


def dataset_cfg(name: str, **overrides: object) -> DictConfig:
    """conf/dataset/<name>.yaml with `overrides` applied (grey datasets: 1 channel unless `channels` is given)."""
    native = {"channels": None} if name in GREY else {}
    return OmegaConf.merge(OmegaConf.load(CONF / "dataset" / f"{name}.yaml"), native, overrides)


def write_batch(path: Path, data: np.ndarray, labels: list[int], label_key: str, bytes_keys: bool) -> None:
    """A pickled CIFAR batch; the official files have bytes keys (Python 2), re-pickled copies str keys."""
    batch = {"data": data, label_key: labels, "batch_label": "fake"}
    if bytes_keys:
        batch = {key.encode(): value for key, value in batch.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch))


def fake_cifar10(folder: Path, rows: list[int]) -> dict[str, tuple[np.ndarray, list[int]]]:
    """data_batch_1..5 and test_batch with `rows` rows each; returns what was written."""
    rng = np.random.default_rng(0)
    files = {}
    for name, n in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], rows):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        write_batch(folder / name, data, labels, "labels", bytes_keys=True)
        files[name] = data, labels
    return files


def pixel(row: np.ndarray, c: int, i: int, j: int) -> int:
    """Channel c, row i, column j of a CIFAR row: 1024 R, then 1024 G, then 1024 B values, row-major."""
    return int(row[c * 1024 + i * 32 + j])


def test_cifar10_pickles_read_back_exactly(tmp_path: Path) -> None:
    files = fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[3, 1, 2, 4, 2, 5])
    data = build_dataset(dataset_cfg("cifar10", root=str(tmp_path)), CPU)
    assert (data.num_train, data.num_test, data.input_shape) == (12, 5, (3, 32, 32))
    images, labels = data.splits["train"]
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    expected = np.concatenate([files[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(images, torch.from_numpy(expected).view(-1, 3, 32, 32))
    assert labels.tolist() == sum((files[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    row = files["data_batch_4"][0][1]  # train row 3 + 1 + 2 + 1 = the 7th image
    for c, i, j in [(0, 0, 0), (1, 5, 31), (2, 31, 7)]:
        assert images[7, c, i, j] == pixel(row, c, i, j)
    test_images, test_labels = data.splits["test"]
    assert torch.equal(test_images.flatten(1), torch.from_numpy(files["test_batch"][0]))
    assert test_labels.tolist() == files["test_batch"][1]


def test_cifar_root_may_be_the_batches_folder_itself(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[1] * 6)
    data = build_dataset(dataset_cfg("cifar10", root=str(tmp_path / "cifar-10-batches-py")), CPU)
    assert data.tag == "cifar10[5/1]"


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    written = {}
    for split, n in [("train", 4), ("test", 3)]:
        data, labels = rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 100, n).tolist()
        write_batch(tmp_path / "cifar-100-python" / split, data, labels, "fine_labels", bytes_keys=False)
        written[split] = data, labels
    data = build_dataset(dataset_cfg("cifar100", root=str(tmp_path)), CPU)
    for split in ("train", "test"):
        images, labels = data.splits[split]
        assert torch.equal(images.flatten(1), torch.from_numpy(written[split][0]))
        assert labels.tolist() == written[split][1]
    assert data.num_classes == 100


def test_limits_keep_the_first_rows(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[4] * 6)
    full = build_dataset(dataset_cfg("cifar10", root=str(tmp_path)), CPU)
    cut = build_dataset(dataset_cfg("cifar10", root=str(tmp_path), limit_train=7, limit_test=2), CPU)
    assert (cut.num_train, cut.num_test) == (7, 2)
    assert torch.equal(cut.splits["train"][0], full.splits["train"][0][:7])
    assert torch.equal(cut.splits["test"][1], full.splits["test"][1][:2])
    with pytest.raises(UserError, match="dataset.limit_train"):
        build_dataset(dataset_cfg("cifar10", root=str(tmp_path), limit_train=0), CPU)


@pytest.mark.skipif(not SUBSET.is_dir(), reason=f"real CIFAR-10 subset not found at {SUBSET}")
def test_real_cifar10_subset() -> None:
    folder = SUBSET / "cifar-10-batches-py"
    for line in (SUBSET / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    data = build_dataset(dataset_cfg("cifar10", root=str(SUBSET)), CPU)
    assert (data.num_train, data.num_test) == (4660, 932)
    for images, labels in data.splits.values():
        assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.uint8
        assert labels.min() == 0 and labels.max() == 9 and len(labels.unique()) == 10


def test_missing_cifar_names_path_and_both_fixes(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        build_dataset(dataset_cfg("cifar10", root=str(tmp_path / "nowhere"), download=False), CPU)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "dataset.root=" in message and "dataset.download=true" in message


def test_download_without_network_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(UserError, match="could not download cifar10.*dataset.root="):
        build_dataset(dataset_cfg("cifar10", root=str(tmp_path), download=True), CPU)


def test_download_then_read_with_our_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeDownload:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            fake_cifar10(Path(root) / "cifar-10-batches-py", rows=[2] * 6)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeDownload)
    data = build_dataset(dataset_cfg("cifar10", root=str(tmp_path / "new"), download=True), CPU)
    assert data.tag == "cifar10[10/2]"


def test_relative_root_resolves_against_the_launch_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cifar10(tmp_path / "data" / "cifar-10-batches-py", rows=[1] * 6)
    monkeypatch.chdir(tmp_path)
    assert build_dataset(dataset_cfg("cifar10"), CPU).num_train == 5  # no Hydra: the current directory
    with initialize_config_dir(str(CONF), version_base="1.3"):
        hydra_cfg = compose(overrides=["+dataset=cifar10"], return_hydra_config=True)
    run_dir = tmp_path / "outputs" / "run"
    run_dir.mkdir(parents=True)
    HydraConfig.instance().set_config(hydra_cfg)  # as inside a Hydra run that chdir'ed to its run dir
    try:
        monkeypatch.chdir(run_dir)
        assert build_dataset(hydra_cfg.dataset, CPU).num_train == 5
    finally:
        HydraConfig.instance().cfg = None


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(UserError, match="cifar10, cifar100, digits, folder, imagenet, mnist, synthetic"):
        build_dataset(OmegaConf.create({"name": "svhn"}), CPU)


def toy(n: int = 12, size: int = 8, *, pad: int = 2, flip: bool = True) -> InMemoryDataset:
    """n images with distinct non-zero pixels (so zero padding is recognisable); label i = image i."""
    values = torch.randperm(255, generator=torch.Generator().manual_seed(0))[: 3 * size * size] + 1
    images = values.to(torch.uint8).view(1, 3, size, size)
    images = torch.cat([images.roll(i, dims=-1) for i in range(n)])
    split = images, torch.arange(n)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    return InMemoryDataset(
        "toy", split, split, num_classes=n, input_size=size, mean=mean, std=std, pad=pad, flip=flip, device=CPU
    )


def normalise(data: InMemoryDataset, images: torch.Tensor) -> torch.Tensor:
    """The reference transform: ToTensor's scaling, then Normalize."""
    return TF.normalize(images.float() / 255, data.mean.flatten().tolist(), data.std.flatten().tolist())


def batches(loader: Loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of `loader`, kept."""
    return [(x.clone(), y.clone()) for x, y in loader]


def test_without_crop_and_flip_the_output_is_the_normalised_input() -> None:
    data = toy(pad=0, flip=False)
    images, _ = data.splits["train"]
    for train in (True, False):
        for x, y in data.loader("train", 5, train=train, seed=3):
            assert x.dtype == torch.float32 and x.is_contiguous() and x.shape[1:] == (3, 8, 8)
            assert torch.equal(x, normalise(data, images[y]))


def test_evaluation_keeps_order_and_only_normalises() -> None:
    data = toy()
    xs, ys = zip(*data.loader("test", 5, train=False))
    assert torch.cat(ys).tolist() == list(range(12)) and [len(y) for y in ys] == [5, 5, 2]
    assert torch.equal(torch.cat(xs), normalise(data, data.splits["test"][0]))


def test_training_crops_are_zero_padded_windows_possibly_flipped() -> None:
    pad, size = 2, 8
    data = toy(pad=pad)
    padded = torch.nn.functional.pad(data.splits["train"][0], (pad,) * 4)  # RandomCrop's zero padding
    candidates = {
        (dy, dx, flipped): normalise(data, window.flip(-1) if flipped else window)
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        for flipped in (False, True)
        for window in [padded[:, :, dy : dy + size, dx : dx + size]]
    }  # every possible output of every image
    seen = set()
    for epoch in range(4):
        loader = data.loader("train", 6, train=True, seed=0)
        loader.set_epoch(epoch)
        for x, y in loader:
            for out, i in zip(x, y.tolist()):
                matches = {key for key, outputs in candidates.items() if torch.equal(out, outputs[i])}
                assert len(matches) == 1, "output is not exactly one shifted (and maybe flipped) window"
                seen |= matches
    assert {dy for dy, _, _ in seen} == set(range(2 * pad + 1)) == {dx for _, dx, _ in seen}
    assert {f for _, _, f in seen} == {False, True}


def test_batches_are_a_function_of_seed_epoch_and_rank() -> None:
    data = toy()
    loader = data.loader("train", 5, train=True, seed=7)
    loader.set_epoch(3)
    first = batches(loader)
    second = batches(loader)  # same epoch again: a resumed run
    again = data.loader("train", 5, train=True, seed=7)
    again.set_epoch(3)
    for (x1, y1), (x2, y2), (x3, y3) in zip(first, second, batches(again)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(x1, x3) and torch.equal(y1, y3)
    loader.set_epoch(4)
    later = batches(loader)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in later]))
    by_label = [torch.cat([x for x, _ in run])[torch.cat([y for _, y in run]).argsort()] for run in (first, later)]
    assert not torch.equal(*by_label)  # each image is augmented afresh each epoch, not only reordered
    other_seed = data.loader("train", 5, train=True, seed=8)
    other_seed.set_epoch(3)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in batches(other_seed)]))


def test_training_shards_are_disjoint_padded_and_equal() -> None:
    data = toy(n=10)
    for world_size in (2, 3, 4):
        loaders = [
            data.loader("train", 3, train=True, seed=1, rank=rank, world_size=world_size) for rank in range(world_size)
        ]
        for loader in loaders:
            loader.set_epoch(2)
        shards = [torch.cat([y for _, y in loader]).tolist() for loader in loaders]
        per_rank = -(-10 // world_size)
        assert all(len(shard) == loader.num_samples == per_rank for shard, loader in zip(shards, loaders))
        assert len({len(loader) for loader in loaders}) == 1
        everything = sum(shards, [])
        assert set(everything) == set(range(10))
        assert len(everything) - len(set(everything)) == per_rank * world_size - 10  # only the padding repeats
        if 10 % world_size == 0:
            assert sorted(everything) == list(range(10))


def test_evaluation_shards_cover_every_sample_exactly_once() -> None:
    data = toy(n=10)
    for world_size in (2, 3, 4):
        shards = [
            torch.cat([y for _, y in data.loader("test", 2, train=False, rank=r, world_size=world_size)]).tolist()
            for r in range(world_size)
        ]
        assert sorted(sum(shards, [])) == list(range(10))


def test_synthetic_is_deterministic_sized_and_learnable() -> None:
    cfg = dataset_cfg("synthetic", image_size=8, num_train=200, num_test=100)
    first, second = build_dataset(cfg, CPU), build_dataset(cfg, CPU)
    assert first.tag == "synthetic[200/100]" and first.input_shape == (3, 8, 8) and first.num_classes == 10
    for split in ("train", "test"):
        assert torch.equal(first.splits[split][0], second.splits[split][0])
        assert torch.equal(first.splits[split][1], second.splits[split][1])
    train_images, train_labels = first.splits["train"]
    assert torch.bincount(train_labels).tolist() == [20] * 10
    # nearest class mean of the channel means: the class colours alone separate the classes
    centres = torch.stack([train_images[train_labels == c].float().mean((0, 2, 3)) for c in range(10)])
    test_images, test_labels = first.splits["test"]
    guess = torch.cdist(test_images.float().mean((2, 3)), centres).argmin(1)
    assert (guess == test_labels).float().mean() > 0.8
    x, y = next(iter(first.loader("train", 16, train=True)))
    assert x.shape == (16, 3, 8, 8) and y.dtype == torch.int64


def write_image_folder(root: Path, sizes: dict[str, int]) -> None:
    """root/<split>/<class>/*.png: 2 classes, `sizes[split]` small RGB images per class."""
    rng = np.random.default_rng(0)
    for split, n in sizes.items():
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")


def folder_cfg(root: Path, **overrides: object) -> DictConfig:
    defaults = {"root": str(root), "num_classes": 2, "input_size": 8, "resize": 9, "num_workers": 0}
    return dataset_cfg("imagenet", **{**defaults, **overrides})


def test_image_folders_give_batches_on_the_device(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"train": 3, "val": 2})
    data = build_dataset(folder_cfg(tmp_path), CPU)
    assert (data.tag, data.input_shape, data.num_classes) == ("imagenet[6/4]", (3, 8, 8), 2)
    train = data.loader("train", 4, train=True, seed=5)
    train.set_epoch(1)
    first = batches(train)
    assert [tuple(x.shape) for x, _ in first] == [(4, 3, 8, 8), (2, 3, 8, 8)] and len(train) == 2
    assert all(x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in first)
    assert sorted(torch.cat([y for _, y in first]).tolist()) == [0, 0, 0, 1, 1, 1]
    for (x1, y1), (x2, y2) in zip(first, batches(train)):  # same epoch, same crops
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    test = data.loader("test", 3, train=False)
    assert torch.cat([y for _, y in test]).tolist() == [0, 0, 1, 1]
    shards = [data.loader("test", 3, train=False, rank=r, world_size=3) for r in range(3)]
    assert sum(loader.num_samples for loader in shards) == 4


def test_image_folder_augmentation_does_not_depend_on_workers(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"train": 2, "val": 1})
    loaders = [
        build_dataset(folder_cfg(tmp_path, num_workers=workers), CPU).loader("train", 4, train=True, seed=2)
        for workers in (0, 1)
    ]
    for loader in loaders:
        loader.set_epoch(3)
    for (x0, y0), (x1, y1) in zip(*map(batches, loaders)):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"{tmp_path / 'train'}.*dataset.root="):
        build_dataset(folder_cfg(tmp_path), CPU)
    write_image_folder(tmp_path, {"train": 1, "val": 1})
    with pytest.raises(UserError, match="dataset.num_classes=1000 but .* has 2 class folders"):
        build_dataset(folder_cfg(tmp_path, num_classes=1000), CPU)


def test_dataset_configs_compose() -> None:
    for name in ("cifar10", "cifar100", "imagenet", "synthetic", "mnist", "digits"):
        cfg = OmegaConf.load(CONF / "dataset" / f"{name}.yaml")
        assert cfg.name == name
        keys = ("root", "download", "num_classes", "input_size", "mean", "std", "limit_train", "limit_test")
        in_memory = ("pad", "flip", "classes", "resolution", "channels") if name != "imagenet" else ()
        for key in (*keys, "val_images", "val_seed", *in_memory):
            assert key in cfg, f"{name}.yaml lacks {key}"
        for key in in_memory[2:]:  # grey images are repeated to the 3 channels every model of the project takes
            expected = 3 if key == "channels" and name in GREY else None
            assert cfg[key] == expected, f"{name}.yaml: {key} must default to {expected}"
    for name, size in (("mnist", 28), ("digits", 8)):
        cfg = dataset_cfg(name)
        assert (cfg.num_classes, cfg.input_size, len(cfg.mean), len(cfg.std), cfg.flip) == (10, size, 1, 1, False)
    digits_cfg = dataset_cfg("digits")
    assert (digits_cfg.split_seed, digits_cfg.test_images, digits_cfg.pad) == (0, 360, 0)
    imagenet = dataset_cfg("imagenet")
    assert (imagenet.num_classes, imagenet.input_size, imagenet.resize) == (1000, 224, 256)
    assert dataset_cfg("synthetic", image_size=16).input_size == 16


def documented_holdout(n: int, n_val: int, val_seed: int) -> tuple[list[int], list[int]]:
    """(training rows, validation rows) by the rule documented in data/options.py, written out."""
    perm = torch.randperm(n, generator=generator(val_seed, "val")).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def without_val_keys(cfg: DictConfig) -> DictConfig:
    """`cfg` as before the validation keys existed."""
    return OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("val_images", "val_seed")})


def one_line_user_error(call: Callable[[], object], match: str) -> str:
    with pytest.raises(UserError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_validation_split_of_in_memory_data_follows_the_rule(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[3, 2, 4, 2, 3, 5])
    for name, base in [
        ("cifar10", dataset_cfg("cifar10", root=str(tmp_path), limit_train=11)),
        ("synthetic", dataset_cfg("synthetic", image_size=8, num_train=40, num_test=10, limit_train=30)),
    ]:
        full_images, full_labels = build_dataset(base, CPU).splits["train"]  # val_images: 0
        n = len(full_labels)
        for n_val, val_seed in [(3, 0), (3, 1), (n - 1, 0)]:
            data = build_dataset(OmegaConf.merge(base, {"val_images": n_val, "val_seed": val_seed}), CPU)
            train_rows, val_rows = documented_holdout(n, n_val, val_seed)
            assert not set(train_rows) & set(val_rows) and sorted(train_rows + val_rows) == list(range(n))
            assert (data.num_train, data.num_val) == (n - n_val, n_val)
            for split, rows in [("train", train_rows), ("val", val_rows)]:
                images, labels = data.splits[split]
                assert torch.equal(images, full_images[rows]) and torch.equal(labels, full_labels[rows]), (name, split)
            test = build_dataset(base, CPU).splits["test"]
            assert all(torch.equal(a, b) for a, b in zip(data.splits["test"], test))
        picks = {
            val_seed: build_dataset(OmegaConf.merge(base, {"val_images": 5, "val_seed": val_seed}), CPU).splits["val"][0]
            for val_seed in (0, 1)
        }
        assert not torch.equal(picks[0], picks[1])  # val_seed picks the images


def test_without_validation_images_nothing_changes(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[4] * 6)
    cases = [
        dataset_cfg("cifar10", root=str(tmp_path), limit_train=14),
        dataset_cfg("cifar10", root=str(tmp_path)),
        dataset_cfg("synthetic", image_size=8, num_train=40, num_test=10),
    ]
    for cfg in cases:
        assert cfg.val_images == 0 and cfg.val_seed == 0  # the defaults
        data, before = build_dataset(cfg, CPU), build_dataset(without_val_keys(cfg), CPU)
        assert data.num_val == 0 and sorted(data.splits) == ["test", "train"]
        assert data.tag == before.tag == f"{cfg.name}[{data.num_train}/{data.num_test}]"
        for split in ("train", "test"):
            assert all(torch.equal(a, b) for a, b in zip(data.splits[split], before.splits[split]))
        other_seed = build_dataset(OmegaConf.merge(cfg, {"val_seed": 5}), CPU)  # unused when off
        assert torch.equal(other_seed.splits["train"][0], data.splits["train"][0])
    assert build_dataset(cases[0], CPU).tag == "cifar10[14/4]"


def test_validation_tag_and_loader(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[4] * 6)
    data = build_dataset(dataset_cfg("cifar10", root=str(tmp_path), val_images=5, val_seed=3), CPU)
    assert data.tag == "cifar10[15+5/4]" and data.splits["val"][0].shape == (5, 3, 32, 32)
    synthetic = build_dataset(dataset_cfg("synthetic", image_size=8, num_train=40, num_test=10, val_images=7), CPU)
    assert synthetic.tag == "synthetic[33+7/10]"
    for dataset in (data, synthetic):
        assert dataset.pad > 0 and dataset.flip  # augmentation is on for "train"...
        images, labels = dataset.splits["val"]
        outputs = {}
        for seed in (0, 9):  # ... but not for "val", and the loader's seed changes nothing
            loader = dataset.loader("val", 3, train=False, seed=seed)
            loader.set_epoch(2)
            xs, ys = zip(*loader)
            assert torch.equal(torch.cat(xs), normalise(dataset, images)) and torch.equal(torch.cat(ys), labels)
            outputs[seed] = torch.cat(xs)
        assert torch.equal(outputs[0], outputs[9])
        shards = [dataset.loader("val", 2, train=False, rank=r, world_size=3) for r in range(3)]  # sharded like "test"
        shard_rows = sorted(sum((torch.cat([y for _, y in s]).tolist() for s in shards), []))
        assert shard_rows == sorted(labels.tolist()) and sum(s.num_samples for s in shards) == len(labels)


def test_validation_split_errors(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[2] * 6)
    off = build_dataset(dataset_cfg("cifar10", root=str(tmp_path)), CPU)
    message = one_line_user_error(lambda: off.loader("val", 4, train=False), "split 'val' needs a validation split")
    assert "set dataset.val_images=N" in message
    one_line_user_error(lambda: off.loader("valid", 4, train=False), "unknown split 'valid': choose one of test, train, val")
    one_line_user_error(lambda: toy().loader("val", 4, train=False), "dataset.val_images=N")
    fraction = build_dataset(dataset_cfg("cifar10", root=str(tmp_path), val_images=0.25), CPU)  # round(2.5) = 2
    assert (fraction.num_train, fraction.num_val) == (8, 2) and fraction.tag == "cifar10[8+2/2]"
    for bad in (10, 11, -1, 1.5, 1.0, True, "3", None):  # 10 training images: N must be in 0..9
        cfg = dataset_cfg("cifar10", root=str(tmp_path), val_images=bad)
        message = one_line_user_error(lambda: build_dataset(cfg, CPU), "dataset.val_images must be an integer")
        assert "set dataset.val_images=N" in message
    cfg = dataset_cfg("cifar10", root=str(tmp_path), limit_train=4, val_images=4)  # counted after limit_train
    assert "from 0 to 3" in one_line_user_error(lambda: build_dataset(cfg, CPU), "dataset.val_images")
    for bad in (1.5, "a", None, False):
        cfg = dataset_cfg("cifar10", root=str(tmp_path), val_images=2, val_seed=bad)
        one_line_user_error(lambda: build_dataset(cfg, CPU), "dataset.val_seed must be an integer.*set dataset.val_seed=")


def test_validation_split_of_an_image_folder(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"train": 5, "val": 2})  # 10 training images, 4 test images
    off = build_dataset(folder_cfg(tmp_path, limit_train=8), CPU)
    assert off.tag == "imagenet[8/4]" and off.num_val == 0 and off.splits["train"].indices == range(8)
    assert build_dataset(without_val_keys(folder_cfg(tmp_path, limit_train=8)), CPU).splits["train"].indices == range(8)
    one_line_user_error(lambda: off.loader("val", 2, train=False), "split 'val' needs a validation split")
    data = build_dataset(folder_cfg(tmp_path, limit_train=8, val_images=3, val_seed=4), CPU)
    train_rows, val_rows = documented_holdout(8, 3, 4)
    assert (data.tag, data.num_train, data.num_val) == ("imagenet[5+3/4]", 5, 3)
    assert list(data.splits["train"].indices) == train_rows and list(data.splits["val"].indices) == val_rows
    assert data.splits["val"].dataset is data.splits["train"].dataset  # held out of root/train, not root/val
    assert data.splits["test"].indices == off.splits["test"].indices
    folder = data.splits["val"].dataset
    expected = torch.stack([data.transforms[False](folder[i][0]) for i in val_rows])  # Resize + CenterCrop only
    for seed in (0, 7):
        xs, ys = zip(*data.loader("val", 2, train=False, seed=seed))
        assert torch.equal(torch.cat(xs), expected)
        assert torch.cat(ys).tolist() == [folder.targets[i] for i in val_rows]
    other = build_dataset(folder_cfg(tmp_path, limit_train=8, val_images=3, val_seed=5), CPU)
    assert list(other.splits["val"].indices) == documented_holdout(8, 3, 5)[1] != val_rows
    for bad in (8, -2, 1.5):
        cfg = folder_cfg(tmp_path, limit_train=8, val_images=bad)
        one_line_user_error(lambda: build_dataset(cfg, CPU), "dataset.val_images must be an integer from 0 to 7")


# MNIST idx files ---------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """`array` (uint8) as an idx file: magic 0x0000 08 <ndim>, the sizes (big-endian int32), the values."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, data: bytes, gz: bool) -> Path:
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_mnist(folder: Path, n_train: int = 7, n_test: int = 4, *, gz: bool | tuple[bool, ...] = False,
               seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four idx files with n_train/n_test 28x28 images in `folder` (gz: all, none, or per file)."""
    rng = np.random.default_rng(seed)
    flags = gz if isinstance(gz, tuple) else (gz,) * 4
    written, flag = {}, iter(flags)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images_name, labels_name = mnist.FILES[split]
        write_idx(folder / images_name, idx_bytes(images), next(flag))
        write_idx(folder / labels_name, idx_bytes(labels), next(flag))
        written[split] = images, labels
    return written


@pytest.mark.parametrize("gz", [False, True, (True, False, False, True)])
@pytest.mark.parametrize("where", ["MNIST/raw", "."])
def test_mnist_idx_files_read_back_exactly(tmp_path: Path, gz: bool | tuple[bool, ...], where: str) -> None:
    written = fake_mnist(tmp_path / where, gz=gz)
    data = build_dataset(dataset_cfg("mnist", root=str(tmp_path), download=False), CPU)
    assert (data.tag, data.input_shape, data.num_classes) == ("mnist[7/4]", (1, 28, 28), 10)
    for split in ("train", "test"):
        images, labels = data.splits[split]
        assert images.dtype == torch.uint8 and images.shape[1] == 1 and labels.dtype == torch.int64
        assert torch.equal(images[:, 0], torch.from_numpy(written[split][0]))
        assert labels.tolist() == written[split][1].tolist()
    x, _ = next(iter(data.loader("test", 4, train=False)))
    assert torch.equal(x, normalise(data, data.splits["test"][0]))


def test_mnist_prefers_plain_files_and_reads_gzip_by_content(tmp_path: Path) -> None:
    written = fake_mnist(tmp_path, gz=False)
    fake_mnist(tmp_path, gz=True, seed=1)  # other images in the .gz files: the plain ones are read
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(gzip.compress(idx_bytes(written["test"][1])))  # gzip, no .gz
    data = build_dataset(dataset_cfg("mnist", root=str(tmp_path), download=False), CPU)
    assert torch.equal(data.splits["train"][0][:, 0], torch.from_numpy(written["train"][0]))
    assert data.splits["test"][1].tolist() == written["test"][1].tolist()


def test_mnist_idx_errors_name_the_file(tmp_path: Path) -> None:
    cfg = dataset_cfg("mnist", root=str(tmp_path), download=False)
    written = fake_mnist(tmp_path)
    labels_path = tmp_path / "train-labels-idx1-ubyte"
    images_path = tmp_path / "train-images-idx3-ubyte"
    good_labels, good_images = labels_path.read_bytes(), images_path.read_bytes()
    cases = [
        (labels_path, idx_bytes(written["train"][1], magic=0x0803), "magic 0x00000801, got 0x00000803"),
        (labels_path, idx_bytes(written["train"][1], magic=0x0D01), "magic 0x00000801, got 0x00000d01"),  # float type
        (labels_path, b"\x00\x00", "got only 2 bytes"),
        (labels_path, good_labels[:6], "truncated: its header needs 8 bytes"),
        (labels_path, good_labels[:-1], "has 6 bytes of values but its header says 7"),
        (images_path, good_images + b"\x00", "has 5489 bytes of values but its header says 7x28x28 = 5488"),
        (labels_path, idx_bytes(written["train"][1][:5]), "has 7 images but .* has 5 labels"),
        (labels_path, b"\x1f\x8b not really gzip", "is not readable"),
    ]
    for path, data, match in cases:
        path.write_bytes(data)
        message = one_line_user_error(lambda: build_dataset(cfg, CPU), match)
        assert str(path) in message and ("official file" in message), message
        labels_path.write_bytes(good_labels)
        images_path.write_bytes(good_images)
    assert build_dataset(cfg, CPU).num_train == 7  # restored


def test_mnist_without_files_offline_is_one_line(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "MNIST" / "raw")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()  # three of four files are not enough
    cfg = dataset_cfg("mnist", root=str(tmp_path), download=False)
    message = one_line_user_error(lambda: build_dataset(cfg, CPU), "mnist not found")
    assert str(tmp_path / "MNIST" / "raw") in message and "t10k-labels-idx1-ubyte" in message
    assert "dataset.root=" in message and "dataset.download=true" in message


def test_mnist_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self: object) -> None:  # torchvision's own message spans several lines
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\nno network\n")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    cfg = dataset_cfg("mnist", root=str(tmp_path / "new"), download=True)
    message = one_line_user_error(lambda: build_dataset(cfg, CPU), "could not download mnist")
    assert "no network" in message and "dataset.download=false" in message and "dataset.root=" in message


def test_mnist_download_then_read_with_our_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeDownload:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            assert download
            fake_mnist(Path(root) / "MNIST" / "raw", 3, 2, gz=True)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeDownload)
    data = build_dataset(dataset_cfg("mnist", root=str(tmp_path / "new"), download=True), CPU)
    assert data.tag == "mnist[3/2]"


# scikit-learn digits -----------------------------------------------------------------------------------------


def sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """load_digits() as documented in data/digits.py: uint8 round(v * 255 / 16), (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    return torch.from_numpy(np.round(raw.images * 255 / 16)).to(torch.uint8)[:, None], torch.from_numpy(raw.target)


def documented_digits_split(n: int, test_images: int, split_seed: int) -> tuple[list[int], list[int]]:
    """(training rows, test rows) by the rule written in data/digits.py."""
    perm = torch.randperm(n, generator=generator(split_seed, "digits")).tolist()
    return sorted(perm[test_images:]), sorted(perm[:test_images])


def test_digits_follow_the_split_rule_and_the_scaling() -> None:
    images, labels = sklearn_digits()
    assert len(labels) == 1797 and images.shape[1:] == (1, 8, 8)
    first = build_dataset(dataset_cfg("digits"), CPU)
    assert (first.tag, first.input_shape, first.num_classes) == ("digits[1437/360]", (1, 8, 8), 10)
    train_rows, test_rows = documented_digits_split(1797, 360, 0)
    for split, rows in (("train", train_rows), ("test", test_rows)):
        got_images, got_labels = first.splits[split]
        assert got_images.dtype == torch.uint8
        assert torch.equal(got_images, images[rows]) and torch.equal(got_labels, labels[rows].long())
    assert sorted(torch.cat([first.splits["train"][0], first.splits["test"][0]]).unique().tolist()) == [
        round(v * 255 / 16) if v != 8 else 128 for v in range(17)
    ]  # 0, 16, 32, ..., 112, 128 (127.5 rounds to even), 143, ..., 255
    assert torch.bincount(first.splits["test"][1], minlength=10).min() > 20  # every digit is tested
    again = build_dataset(dataset_cfg("digits"), CPU)
    for split in ("train", "test"):
        assert all(torch.equal(a, b) for a, b in zip(first.splits[split], again.splits[split]))
    other = build_dataset(dataset_cfg("digits", split_seed=1, test_images=100), CPU)
    assert other.tag == "digits[1697/100]"
    assert torch.equal(other.splits["test"][0], images[documented_digits_split(1797, 100, 1)[1]])
    limited = build_dataset(dataset_cfg("digits", limit_train=50, val_images=10), CPU)
    assert limited.tag == "digits[40+10/360]"
    val_rows = documented_holdout(50, 10, 0)[1]
    assert torch.equal(limited.splits["val"][0], images[train_rows[:50]][val_rows])


def test_digits_statistics_in_the_config() -> None:
    cfg = dataset_cfg("digits")
    train = build_dataset(cfg, CPU).splits["train"][0].double() / 255  # the default split, as the yaml says
    assert abs(train.mean().item() - cfg.mean[0]) < 1e-4 and abs(train.std(unbiased=False).item() - cfg.std[0]) < 1e-4


def test_digits_errors() -> None:
    for bad in (0, 1797, -3):
        cfg = dataset_cfg("digits", test_images=bad)
        one_line_user_error(lambda: build_dataset(cfg, CPU), "dataset.test_images must be from 1 to 1796")
    for key, bad in (("test_images", "10"), ("split_seed", 0.5), ("split_seed", None)):
        cfg = dataset_cfg("digits", **{key: bad})
        one_line_user_error(lambda: build_dataset(cfg, CPU), f"dataset.{key} must be an integer")


# dataset.classes ---------------------------------------------------------------------------------------------


def test_classes_keep_and_relabel_in_both_splits(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[20] * 6)
    base = dataset_cfg("cifar10", root=str(tmp_path))
    full = build_dataset(base, CPU)
    for kept, tag in (([5, 6, 7, 8, 9], "{5-9}"), ([9, 2], "{9,2}"), ([0, 2, 4], "{0,2,4}"), ([3], "{3}")):
        data = build_dataset(OmegaConf.merge(base, {"classes": kept, "num_classes": len(kept)}), CPU)
        for split in ("train", "test"):
            images, labels = full.splits[split]
            rows = [i for i, y in enumerate(labels.tolist()) if y in kept]  # original order
            got_images, got_labels = data.splits[split]
            assert torch.equal(got_images, images[rows]), (kept, split)
            assert got_labels.tolist() == [kept.index(y) for y in labels[rows].tolist()]
        assert data.tag == f"cifar10{tag}[{data.num_train}/{data.num_test}]" and data.classes == tuple(kept)
        assert data.num_classes == len(kept)
    assert full.classes is None and full.tag == "cifar10[100/20]"


def test_classes_come_before_limits_and_the_validation_split(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[20] * 6)
    subset = {"classes": [5, 6, 7, 8, 9], "num_classes": 5}
    whole = build_dataset(dataset_cfg("cifar10", root=str(tmp_path), **subset), CPU)  # no limits
    n = whole.num_train
    data = build_dataset(dataset_cfg("cifar10", root=str(tmp_path), limit_train=30, limit_test=7, **subset), CPU)
    assert (data.num_train, data.num_test) == (30, 7) and n > 30  # 30 rows of the subset, not of all rows
    assert torch.equal(data.splits["train"][0], whole.splits["train"][0][:30])
    assert torch.equal(data.splits["test"][1], whole.splits["test"][1][:7])
    held = build_dataset(
        dataset_cfg("cifar10", root=str(tmp_path), limit_train=30, val_images=8, val_seed=2, **subset), CPU
    )
    train_rows, val_rows = documented_holdout(30, 8, 2)
    assert held.tag == f"cifar10{{5-9}}[22+8/{whole.num_test}]" and whole.num_test < 20
    for split, rows in (("train", train_rows), ("val", val_rows)):
        assert all(torch.equal(a, b[:30][rows]) for a, b in zip(held.splits[split], whole.splits["train"]))
    cfg = dataset_cfg("cifar10", root=str(tmp_path), val_images=n, **subset)  # counted in the subset
    assert f"from 0 to {n - 1}" in one_line_user_error(lambda: build_dataset(cfg, CPU), "dataset.val_images")


def test_classes_of_every_in_memory_dataset(tmp_path: Path) -> None:
    fake_mnist(tmp_path, 40, 20)
    synthetic = dataset_cfg("synthetic", image_size=8, num_train=40, num_test=20, generated_classes=10)
    full = {
        "mnist": build_dataset(dataset_cfg("mnist", root=str(tmp_path), download=False), CPU),
        "digits": build_dataset(dataset_cfg("digits"), CPU),
        "synthetic": build_dataset(synthetic, CPU),
    }
    default = build_dataset(dataset_cfg("synthetic", image_size=8, num_train=40, num_test=20), CPU)
    assert full["synthetic"].tag == default.tag  # generated_classes: 10 is num_classes: 10
    for name, cfg in (("mnist", dataset_cfg("mnist", root=str(tmp_path), download=False)),
                      ("digits", dataset_cfg("digits")), ("synthetic", synthetic)):
        labels = full[name].splits["train"][1]
        kept = sorted(set(labels.tolist()))[:3][::-1]  # three present classes, in descending order
        data = build_dataset(OmegaConf.merge(cfg, {"classes": kept, "num_classes": 3}), CPU)
        rows = [i for i, y in enumerate(labels.tolist()) if y in kept]
        assert torch.equal(data.splits["train"][0], full[name].splits["train"][0][rows])
        assert data.splits["train"][1].tolist() == [kept.index(y) for y in labels[rows].tolist()]
        assert data.tag.startswith(f"{name}{{{','.join(map(str, kept))}}}[")


def test_classes_errors(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[20] * 6)
    base = dataset_cfg("cifar10", root=str(tmp_path))
    message = one_line_user_error(
        lambda: build_dataset(OmegaConf.merge(base, {"classes": [5, 6, 7, 8, 9]}), CPU),
        r"dataset.num_classes=10 but dataset.classes keeps 5 classes",
    )
    assert "set dataset.num_classes=5" in message
    for bad in ([], [1, 1], [-1, 2], [1.5, 2], ["a"], "0-4", 3, [True, 2]):
        cfg = OmegaConf.merge(base, {"classes": bad, "num_classes": 2})
        one_line_user_error(lambda: build_dataset(cfg, CPU), "dataset.classes must be null or a non-empty list")
    cfg = OmegaConf.merge(base, {"classes": [3, 12], "num_classes": 2})
    message = one_line_user_error(lambda: build_dataset(cfg, CPU), r"dataset.classes lists \[12\]")
    assert "labels are 0..9" in message
    write_image_folder(tmp_path / "folders", {"train": 1, "val": 1})
    for key, value in (("classes", [0]), ("resolution", 32), ("channels", 3)):
        cfg = OmegaConf.merge(folder_cfg(tmp_path / "folders"), {key: value})
        one_line_user_error(lambda: build_dataset(cfg, CPU), f"dataset.{key} applies only to in-memory datasets")


def test_class_list_tags() -> None:
    cases = {(5, 6, 7, 8, 9): "5-9", (0, 2, 4): "0,2,4", (0, 1, 2, 7): "0-2,7", (9, 8): "9,8", (3,): "3",
             (0, 1, 2, 5, 6, 7): "0-2,5-7", (1, 2): "1-2"}
    for classes, text in cases.items():
        assert class_list(classes) == text


# dataset.resolution and dataset.channels ---------------------------------------------------------------------


def resized(x: torch.Tensor, size: int, channels: int | None) -> torch.Tensor:
    """The documented reshape, written out: bilinear resize of the normalised batch, then 1 -> C channels."""
    out = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return out.repeat(1, channels, 1, 1) if channels else out


def test_resolution_and_channels_resize_every_batch_on_the_device() -> None:
    base = dataset_cfg("digits", pad=1, limit_train=40, limit_test=20, val_images=10)
    native = build_dataset(base, CPU)
    for size, channels, shape in ((32, 3, (3, 32, 32)), (5, None, (1, 5, 5)), (None, 3, (3, 8, 8))):
        data = build_dataset(OmegaConf.merge(base, {"resolution": size, "channels": channels}), CPU)
        assert data.input_shape == shape and (data.num_train, data.num_val, data.num_test) == (30, 10, 20)
        assert data.splits["train"][0].shape[1:] == (1, 8, 8) and data.splits["train"][0].dtype == torch.uint8
        assert data.tag == "digits[30+10/20]" + (f"@{size}" if size else "")
        for split, train in (("train", True), ("train", False), ("val", False), ("test", False)):
            loaders = [d.loader(split, 8, train=train, seed=4) for d in (native, data)]
            for loader in loaders:
                loader.set_epoch(2)
            for (x0, y0), (x, y) in zip(*map(batches, loaders)):  # same crops and flips at the native size
                assert x.shape[1:] == shape and x.is_contiguous() and x.dtype == torch.float32
                expected = resized(x0, size, channels) if size else x0.repeat(1, channels, 1, 1)
                assert torch.equal(x, expected) and torch.equal(y, y0), (size, channels, split, train)
    images = native.splits["test"][0]
    data = build_dataset(OmegaConf.merge(base, {"resolution": 32, "channels": 3}), CPU)
    x = torch.cat([x for x, _ in data.loader("test", 8, train=False)])
    assert torch.equal(x, resized(normalise(native, images), 32, 3))  # explicit F.interpolate of the normalised batch


def without_keys(cfg: DictConfig, *keys: str) -> DictConfig:
    """`cfg` as before `keys` existed."""
    return OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg).items() if k not in keys})


def test_null_resolution_channels_and_classes_change_nothing(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[4] * 6)
    fake_mnist(tmp_path / "mnist", 6, 3)
    cases = [
        dataset_cfg("cifar10", root=str(tmp_path), val_images=3),
        dataset_cfg("synthetic", image_size=8, num_train=40, num_test=10),
        dataset_cfg("mnist", root=str(tmp_path / "mnist"), download=False, pad=2),
        dataset_cfg("digits", pad=1, limit_train=30),
    ]
    for cfg in cases:
        assert cfg.classes is None and cfg.resolution is None and cfg.channels is None  # the defaults
        data = build_dataset(cfg, CPU)
        before = build_dataset(without_keys(cfg, "classes", "resolution", "channels", "generated_classes"), CPU)
        assert data.tag == before.tag and "@" not in data.tag and "{" not in data.tag
        assert data.input_shape == before.input_shape == tuple(data.splits["train"][0].shape[1:])
        for split in data.splits:
            for train in (True, False):
                loaders = [d.loader(split, 4, train=train, seed=1) for d in (data, before)]
                for (x0, y0), (x1, y1) in zip(*map(batches, loaders)):
                    assert torch.equal(x0, x1) and torch.equal(y0, y1)
        same = build_dataset(OmegaConf.merge(cfg, {"resolution": cfg.input_size}), CPU)  # the native size: no resize
        assert same.tag == data.tag and same.input_shape == data.input_shape
        for (x0, _), (x1, _) in zip(*(batches(d.loader("train", 4, train=True, seed=1)) for d in (data, same))):
            assert torch.equal(x0, x1)


def test_cifar_to_a_larger_resolution_and_channel_errors(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py", rows=[4] * 6)
    base = dataset_cfg("cifar10", root=str(tmp_path), val_images=4)
    native = build_dataset(base, CPU)
    data = build_dataset(OmegaConf.merge(base, {"resolution": 64, "channels": 3}), CPU)  # channels=3 of RGB: no-op
    assert data.input_shape == (3, 64, 64) and data.tag == "cifar10[16+4/4]@64"
    loaders = [d.loader("train", 6, train=True, seed=2) for d in (native, data)]
    for (x0, _), (x, _) in zip(*map(batches, loaders)):
        assert x.shape[1:] == (3, 64, 64) and torch.equal(x, resized(x0, 64, None))
    subset = build_dataset(OmegaConf.merge(base, {"classes": [0, 2, 4], "num_classes": 3, "val_images": 0,
                                                  "resolution": 224}), CPU)
    assert subset.tag == f"cifar10{{0,2,4}}[{subset.num_train}/{subset.num_test}]@224"
    bad_values = (("resolution", 0), ("resolution", "32"), ("resolution", 1.5), ("channels", -1), ("channels", True))
    for key, bad in bad_values:
        cfg = OmegaConf.merge(base, {key: bad})
        one_line_user_error(lambda: build_dataset(cfg, CPU), f"dataset.{key} must be null or a positive integer")
    for bad in (1, 6):
        cfg = OmegaConf.merge(base, {"channels": bad})
        message = one_line_user_error(lambda: build_dataset(cfg, CPU), f"dataset.channels={bad} but cifar10 images")
        assert "only 1-channel images can be repeated" in message and "set dataset.channels=null" in message


def test_random_like_has_the_shape_of_the_real_data() -> None:
    for overrides in ({}, {"resolution": 32, "channels": 3}, {"resolution": 16}):
        cfg = dataset_cfg("digits", **overrides)
        fake, real = random_like(cfg), build_dataset(cfg, CPU)
        assert fake.input_shape == real.input_shape and fake.num_classes == real.num_classes
        x, _ = next(iter(fake.loader("train", 4, train=False)))
        assert x.shape[1:] == real.input_shape
    assert random_like(dataset_cfg("cifar10")).input_shape == (3, 32, 32)
    assert random_like(dataset_cfg("imagenet")).input_shape == (3, 224, 224)
