"""Data-parallel setup for `torchrun --nproc_per_node=N run.py ...`.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; we then join the process group (NCCL on
GPUs, gloo on CPU), pin each process to its GPU and wrap the model in
DistributedDataParallel.  Without those variables everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from prunelab.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


DEVICES = ("auto", "cpu", "cuda")  # the `device` key


def pick_device(name: str, world: World) -> torch.device:
    """`auto` is the process's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in DEVICES:
        raise UserError(f"unknown device '{name}': choose one of {', '.join(DEVICES)}")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device=cuda but this machine has no usable CUDA device: use device=cpu (or auto)")
        return torch.device("cuda", world.local_rank)
    return torch.device(name)


def init_world(device_name: str) -> World:
    """Join the torchrun process group if there is one (idempotent)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = pick_device(device_name, world).type == "cuda"
        if cuda:
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return world


def wrap(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """The module to train: DDP around `model` when distributed."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
