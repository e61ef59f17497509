"""Cost of linear over-parameterization: step time and peak memory of LOP against plain fine-tuning.

    python experiments/bench_lop.py [--device cpu] [--steps 5] [--batch-size 64] [--ratio 0.5] [--threads N]

The same L1-pruned CIFAR ResNet-56 (random weights, ratio `--ratio` of every block's inner conv) trained
for `--steps` SGD steps on random 32x32 images: plain (the pruned layers as they are) and LOP (every conv
and the classifier expanded with E = `--expand`, the SP-KD loss against the dense model on every
expanded layer, the teacher under no_grad).  Each arm runs in its own process; peak memory is the
process's maximum resident set on CPU (ru_maxrss, minus the resident set before the model is built) and
torch's peak allocation on CUDA.  Writes results/bench/lop.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import resource
import statistics
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bench import REPO, add_machine_args, code_version, footer, set_threads, timed
from prunelab.methods.base import Context, build_method
from prunelab.models import build_model
from prunelab.record import command_line, device_name, utc_timestamp, write_json_atomic

SOURCES = ("src/prunelab/layers/expanded.py", "src/prunelab/methods/lop.py", "src/prunelab/train/similarity.py",
           "experiments/bench_lop.py")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def arm(name: str, args: argparse.Namespace, out: mp.Queue) -> None:
    """One arm in a fresh process: (median step seconds, peak memory MB, trainable parameters)."""
    set_threads(args)
    device = torch.device(args.device)
    before = rss_mb()
    torch.manual_seed(0)
    dense = build_model(OmegaConf.load(REPO / "conf" / "model" / "resnet56.yaml"), 10).to(device).eval()
    overrides = {"expand": args.expand if name == "lop" else 0, "gamma": 3000.0 if name == "lop" else 0.0}
    cfg = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "method" / "lop.yaml"), overrides)
    cfg.pop("defaults")
    cfg.pruner = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "method" / "l1.yaml"), {"ratio": args.ratio})
    method = build_method(cfg)
    ctx = Context(SimpleNamespace(input_shape=(3, 32, 32)), device, 0, teacher=dense)
    model = method.prepare(copy.deepcopy(dense), ctx).to(device).train()
    callbacks = method.callbacks(ctx)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    state = SimpleNamespace(model=model)
    for cb in callbacks:
        cb.on_fit_start(state)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, 32, 32, generator=gen).to(device)
    labels = torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(images)
            loss = F.cross_entropy(logits, labels) + sum(cb.extra_loss(state, images, labels, logits) for cb in callbacks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    timed(step, device)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [timed(step, device)[0] for _ in range(args.steps)]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mb() - before
    out.put((name, statistics.median(times), peak, sum(p.numel() for p in model.parameters())))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--expand", type=int, default=4)
    add_machine_args(p)
    args = p.parse_args()
    spawn = mp.get_context("spawn")
    results = {}
    for name in ("plain", "lop"):
        queue = spawn.Queue()
        process = spawn.Process(target=arm, args=(name, args, queue))
        process.start()
        key, step_s, peak_mb, params = queue.get()
        process.join()
        results[key] = {"step_s": step_s, "peak_mb": peak_mb, "trained_params": params}
    device = torch.device(args.device)
    record = {
        "benchmark": "lop", "model": "resnet56 (random init, L1-pruned)", "ratio": args.ratio, "expand": args.expand,
        "batch_size": args.batch_size, "steps": args.steps, **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items()},
        "step_time_ratio": results["lop"]["step_s"] / results["plain"]["step_s"],
        "memory_ratio": results["lop"]["peak_mb"] / results["plain"]["peak_mb"],
        "memory_measure": "torch peak allocation (CUDA)" if device.type == "cuda" else "max resident set (CPU)",
        "device": device_name(device), "threads": args.threads or torch.get_num_threads(), "torch": torch.__version__,
        "git_sha": code_version(*SOURCES), "command": command_line(), "timestamp": utc_timestamp(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "lop.json", record)
    plain, lop = results["plain"], results["lop"]
    (args.out / "lop.md").write_text(
        f"# Linear over-parameterization: cost of a training step, ResNet-56 (L1 ratio {args.ratio}, E = {args.expand})\n\n"
        f"Median of {args.steps} SGD steps (batch {args.batch_size}, 32x32), each arm in its own process; memory: "
        f"{record['memory_measure']}.\n\n"
        "| arm | step | peak memory | trained parameters |\n|---|---|---|---|\n"
        f"| plain fine-tuning | {plain['step_s']:.3f} s | {plain['peak_mb']:.0f} MB | {plain['trained_params']:,} |\n"
        f"| LOP (expanded + SP-KD) | {lop['step_s']:.3f} s | {lop['peak_mb']:.0f} MB | {lop['trained_params']:,} |\n\n"
        f"LOP / plain: {record['step_time_ratio']:.1f}x the step time, {record['memory_ratio']:.1f}x the memory.\n\n"
        + footer(record)
    )
    print((args.out / "lop.md").read_text())


if __name__ == "__main__":
    main()
