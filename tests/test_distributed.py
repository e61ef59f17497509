"""Two-process data parallelism on CPU (gloo), as `torchrun --nproc_per_node=2 run.py` sets it up."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from conftest import TINY, compose_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    from prunelab.data import build_dataset
    from prunelab.measure.accuracy import top1
    from prunelab.models import build_model
    from prunelab.train.distributed import init_world, pick_device
    from prunelab.train.loop import evaluate, fit
    from prunelab.train.stage import Stage

    cfg = compose_config([*TINY, "trainer.limit_steps=3", "trainer.limit_eval_batches=null"])
    world = init_world("cpu")
    device = pick_device("cpu", world)
    data = build_dataset(cfg.dataset, device)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_classes)
    result = fit(model, data, Stage("finetune", cfg.trainer), device=device, seed=0, world=world)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    acc_ddp = evaluate(model, data, cfg.trainer, device, world)
    torch.distributed.destroy_process_group()
    acc_single = top1(model, data.loader("test", 7, train=False), device)
    torch.save({"params": flat, "acc_ddp": acc_ddp, "acc_single": acc_single, "loss": result.history[0]["train_loss"]},
               f"{out}/rank{rank}.pt")


def test_two_process_gloo_step_keeps_replicas_identical(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["params"], r1["params"])  # gradients were averaged: replicas stay in step
    assert r0["acc_ddp"] == r1["acc_ddp"] == r0["acc_single"]  # sharded evaluation covers every image once
    assert r0["loss"] == r1["loss"] and torch.isfinite(torch.tensor(r0["loss"]))
