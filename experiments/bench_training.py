"""Training throughput of ResNet-56 on a CIFAR-shaped dataset: our loop vs a plain DataLoader loop.

Ours: the whole uint8 dataset on the device, crop/flip/normalise there, bf16 autocast and
channels_last on CUDA, one host sync per epoch (prunelab.train.loop.fit), with and without
torch.compile.  Reference: torchvision-style training in the same process, a Dataset of
PIL images with RandomCrop/RandomHorizontalFlip/ToTensor/Normalize, a DataLoader with
workers and pinned memory, fp32, and `loss.item()` every step.

    python experiments/bench_training.py                     # full size on the GPU
    python experiments/bench_training.py --device cpu --images 1024 --epochs 2   # a CPU smoke run
Writes results/bench/training_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from prunelab.data.in_memory import InMemoryDataset
from prunelab.models import build_model
from prunelab.pipeline import REPO
from prunelab.record import command_line, device_name, git_sha
from prunelab.train.loop import fit
from prunelab.train.stage import Stage

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


def recipe(epochs: int, compile_model: bool, amp: bool) -> dict:
    base = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "trainer" / "cifar_baseline.yaml"))
    base.update(epochs=epochs, compile=compile_model, amp="bf16" if amp else "none", channels_last=amp,
                limit_eval_batches=1, schedule="cosine")
    return base


def ours(images: torch.Tensor, labels: torch.Tensor, device: torch.device, epochs: int, compile_model: bool,
         model_name: str = "resnet56") -> dict:
    data = InMemoryDataset("bench", (images, labels), (images[:1000], labels[:1000]), num_classes=10, input_size=32,
                           mean=MEAN, std=STD, pad=4, flip=True, device=device)
    torch.manual_seed(0)
    model = build_model(OmegaConf.load(REPO / "conf" / "model" / f"{model_name}.yaml"), 10).to(device)
    result = fit(model, data, Stage("bench", recipe(epochs, compile_model, device.type == "cuda")), device=device,
                 seed=0)
    times = [row["epoch_time_s"] for row in result.history]
    steady = times[1:] or times  # the first epoch includes cudnn autotuning and compilation
    per_epoch = sum(steady) / len(steady)
    return {"s_per_epoch": per_epoch, "images_per_s": len(labels) / per_epoch, "first_epoch_s": times[0]}


def dataloader_loop(images: torch.Tensor, labels: torch.Tensor, device: torch.device, epochs: int,
                    workers: int, model_name: str = "resnet56") -> dict:
    from PIL import Image
    from torchvision import transforms

    class PILDataset(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.array = images.permute(0, 2, 3, 1).contiguous().numpy()
            self.transform = transforms.Compose([
                transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                transforms.Normalize(MEAN, STD)])

        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            return self.transform(Image.fromarray(self.array[i])), int(labels[i])

    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=128, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model(OmegaConf.load(REPO / "conf" / "model" / f"{model_name}.yaml"), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        times.append(time.perf_counter() - start)
    steady = times[1:] or times
    per_epoch = sum(steady) / len(steady)
    return {"s_per_epoch": per_epoch, "images_per_s": len(labels) / per_epoch, "first_epoch_s": times[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--epochs", type=int, default=3, help="epochs per variant; the first is reported separately")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--out", default=str(REPO / "results" / "bench" / "training_throughput"))
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.images,), generator=gen)
    rows = {
        "prunelab loop (data on the device; bf16 + channels_last on CUDA)": ours(images, labels, device, args.epochs, False),
        "prunelab + torch.compile": ours(images, labels, device, args.epochs, True),
        f"DataLoader + PIL transforms ({args.workers} workers, fp32)": dataloader_loop(
            images, labels, device, args.epochs, args.workers),
    }
    record = {
        "command": command_line(), "git_sha": git_sha(REPO),
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "images": args.images, "epochs": args.epochs, "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# ResNet-56 training throughput ({record['device']})", "",
             f"`{record['command']}` at {record['git_sha'][:12]}, torch {record['torch']}, "
             f"{args.images:,} CIFAR-shaped images, mean of epochs 2..{args.epochs}.", "",
             "| loop | s / epoch | images / s | first epoch (s) |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['s_per_epoch']:.2f} | {v['images_per_s']:,.0f} | {v['first_epoch_s']:.1f} |"
              for k, v in rows.items()]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
