"""Cost of one LRPET projection of ResNet-56 against one CIFAR-10 training epoch.

Times one projection of all 55 convs (energy transfer + BN rectification,
g = 0.57) batched by weight shape (one SVD call per shape group, the default) and as a
per-layer loop, in float64 and float32, and one training step (forward + backward + SGD on
a batch of random 32x32 images), extrapolated to an epoch of 391 steps (50,000 images at
batch 128).  The variants are timed round-robin (median and min) so that the slow periods of
a shared machine hit all of them alike.  Writes results/bench/lrpet_projection.{json,md}.

    python experiments/bench_lrpet_projection.py [--device cpu] [--repeats 15] [--train-steps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from prunelab.methods.lrpet import ConvPlan, Projection, plan_ranks, project_model
from prunelab.models import build_model
from bench import REPO, add_machine_args, code_version, footer, set_threads, timed
from prunelab.record import command_line, device_name, utc_timestamp, write_json_atomic

SOURCES = ("src/prunelab/layers/matrix.py", "src/prunelab/methods/lrpet.py", "experiments/bench_lrpet_projection.py")


def interleaved(variants: dict[str, tuple[Callable[[], None], int]], device: torch.device) -> dict[str, list[float]]:
    """Times of each variant (fn, repeats) after one warm-up call each, measured round-robin so
    that a slow period of a shared machine hits every variant alike."""
    for fn, _ in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(max(n for _, n in variants.values())):
        for name, (fn, n) in variants.items():
            if i < n:
                times[name].append(timed(fn, device)[0])
    return times


def per_layer(model: torch.nn.Module, plan: list[ConvPlan], how: Projection) -> None:
    """The unbatched reference: one SVD call per conv."""
    for conv in plan:
        project_model(model, [conv], how)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=15, help="timed projections per variant")
    p.add_argument("--train-steps", type=int, default=5, help="timed training steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps-per-epoch", type=int, default=391)
    add_machine_args(p)
    args = p.parse_args()
    set_threads(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(OmegaConf.load(REPO / "conf" / "model" / "resnet56.yaml"), 10).to(device)
    plan = plan_ranks(model, (3, 32, 32), 0.57)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    images = torch.randn(args.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)

    def train_step() -> None:
        model.train()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    variants = {"train_step": (train_step, args.train_steps)}
    for dtype in ("float64", "float32"):
        how = Projection(dtype=getattr(torch, dtype))
        variants[f"batched_{dtype}"] = (partial(project_model, model, plan, how), args.repeats)
        variants[f"per_layer_{dtype}"] = (partial(per_layer, model, plan, how), args.repeats)
    times = interleaved(variants, device)
    median = {name: statistics.median(t) for name, t in times.items()}
    step_s = median["train_step"]
    epoch_s = step_s * args.steps_per_epoch
    default_s = median["batched_float64"]
    record = {
        "benchmark": "lrpet_projection", "model": "resnet56", "convs": len(plan), "rank_ratio": 0.57,
        "shape_groups": len({tuple(model.get_submodule(c.name).weight.shape) for c in plan}),
        **{f"{name}_s": t for name, t in median.items()}, "min_s": {name: min(t) for name, t in times.items()},
        "batch_size": args.batch_size, "steps_per_epoch": args.steps_per_epoch,
        "epoch_s_extrapolated": epoch_s, "projection_fraction_of_epoch": default_s / epoch_s,
        "batched_speedup_float64": median["per_layer_float64"] / default_s,
        "repeats": args.repeats, "train_steps": args.train_steps, "device": device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "git_sha": code_version(*SOURCES),
        "command": command_line(), "timestamp": utc_timestamp(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "lrpet_projection.json", record)
    ms = {k: 1e3 * v for k, v in median.items()}
    low = {k: 1e3 * v for k, v in record["min_s"].items()}
    (args.out / "lrpet_projection.md").write_text(
        "# LRPET projection cost, ResNet-56 (g = 0.57, 55 convs)\n\n"
        f"One projection of all {len(plan)} convs (truncated SVD + energy transfer + BN rectification) against "
        f"one training epoch ({args.steps_per_epoch} steps of batch {args.batch_size}, extrapolated from one "
        f"forward + backward + SGD step).  Median (min) of {args.repeats} projections and {args.train_steps} "
        "steps, measured round-robin.\n\n"
        "| projection | float64 SVD (default) | float32 SVD |\n|---|---|---|\n"
        f"| batched by shape ({record['shape_groups']} SVD calls) | {ms['batched_float64']:.1f} ms "
        f"({low['batched_float64']:.1f}) | {ms['batched_float32']:.1f} ms ({low['batched_float32']:.1f}) |\n"
        f"| per-layer loop ({len(plan)} SVD calls) | {ms['per_layer_float64']:.1f} ms ({low['per_layer_float64']:.1f}) "
        f"| {ms['per_layer_float32']:.1f} ms ({low['per_layer_float32']:.1f}) |\n\n"
        f"Training step: {step_s:.2f} s ({record['min_s']['train_step']:.2f}); epoch (extrapolated): {epoch_s:.0f} s.  "
        f"One projection per epoch (CIFAR schedule) costs {100 * record['projection_fraction_of_epoch']:.3f}% "
        "of the epoch.\n\n"
        + footer(record)
    )
    print((args.out / "lrpet_projection.md").read_text())


if __name__ == "__main__":
    main()
