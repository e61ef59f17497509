"""Data layer: CIFAR pickle reader, on-device augmentation, sharding, folders, synthetic data."""

from __future__ import annotations

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

from prunelab.data import Loader, build_dataset
from prunelab.data.in_memory import InMemoryDataset
from prunelab.data.sharding import generator
from prunelab.errors import UserError

CONF = Path(__file__).parents[1] / "conf"
SUBSET = (Path(__file__).parents[1] / "../shared/data/cifar-10-subset").resolve()
CPU = torch.device("cpu")


def dataset_cfg(name: str, **overrides: object) -> DictConfig:
    """conf/dataset/<name>.yaml with `overrides` applied."""
    return OmegaConf.merge(OmegaConf.load(CONF / "dataset" / f"{name}.yaml"), overrides)


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
    with pytest.raises(UserError, match="cifar10, cifar100, folder, imagenet, synthetic"):
        build_dataset(OmegaConf.create({"name": "mnist"}), CPU)


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
    for name in ("cifar10", "cifar100", "imagenet", "synthetic"):
        cfg = dataset_cfg(name)
        assert cfg.name == name
        keys = ("root", "download", "num_classes", "input_size", "mean", "std", "limit_train", "limit_test")
        for key in (*keys, "val_images", "val_seed"):
            assert key in cfg, f"{name}.yaml lacks {key}"
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
    for bad in (10, 11, -1, 1.5, True, "3", None):  # 10 training images: N must be in 0..9
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
    for bad in (8, -2, 0.5):
        cfg = folder_cfg(tmp_path, limit_train=8, val_images=bad)
        one_line_user_error(lambda: build_dataset(cfg, CPU), "dataset.val_images must be an integer from 0 to 7")
