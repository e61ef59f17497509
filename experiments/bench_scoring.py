"""Speed of nuclear-norm filter scoring: our batched single pass against HRank-style per-map loops.

Scores every prunable ResNet-56 layer (stem, stage-1/2 outputs, 27 block mids: 46 convs, 1,456
maps per image) on the same images three ways, in one process:

- batched (ours, `criteria.nuclear`): one forward pass with hooks on all layers, one batched SVD per
  layer and batch (`torch.linalg.svdvals` on the stacked (B*C, H, W) maps), float64 sums on the device;
- per-map loop, one pass: the same single pass, but the hook takes the nuclear norm of one map at a
  time and reads it back as a Python number (isolates the batching);
- HRank-style: one pass over all images *per layer* with a hook on that layer only, and the per-map
  loop inside the hook, as lmbxmu/HRank's rank_generation.py scores its maps (there with matrix_rank).

Checks the three agree, times them (batched: median of `--repeats`; loops: once) and writes
results/bench/scoring.{json,md}.

    python experiments/bench_scoring.py [--images 640] [--batch-size 128] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import torch
from omegaconf import OmegaConf
from torch import nn

from prunelab.methods.criteria import Batches, nuclear
from prunelab.models import build_model
from prunelab.models.features import FeatureTap
from bench import REPO, add_machine_args, code_version, footer, set_threads, timed
from prunelab.record import command_line, device_name, utc_timestamp, write_json_atomic
from prunelab.surgery import Member, channel_groups

SOURCES = ("src/prunelab/methods/criteria.py", "src/prunelab/models/features.py", "experiments/bench_scoring.py")


@torch.no_grad()
def looped(model: nn.Module, layers: Sequence[Member], batches: Batches, one_pass: bool) -> dict[str, torch.Tensor]:
    """Mean nuclear norm per channel, one map at a time (`one_pass=False`: one pass per layer, as HRank)."""
    totals: dict[str, list[float]] = {}
    seen: dict[str, int] = {}

    def record(conv: str, out: torch.Tensor) -> None:
        sums = totals.setdefault(conv, [0.0] * out.shape[1])
        for i in range(out.shape[0]):
            for c in range(out.shape[1]):
                sums[c] += torch.linalg.matrix_norm(out[i, c], ord="nuc").item()
        seen[conv] = seen.get(conv, 0) + out.shape[0]

    model.eval()
    for group in [list(layers)] if one_pass else [[m] for m in layers]:
        convs = {m.feature: m.conv for m in group}
        with FeatureTap(model, convs, lambda name, _m, _inp, out, convs=convs: record(convs[name], out)):
            for images, _ in batches:
                model(images)
    return {conv: torch.tensor(s, dtype=torch.float64) / seen[conv] for conv, s in totals.items()}


@torch.no_grad()
def forward_only(model: nn.Module, batches: Batches) -> dict:
    for images, _ in batches:
        model(images)
    return {}


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float(((a[k].double().cpu() - b[k].double().cpu()).abs() / b[k].double().cpu().abs().clamp_min(1e-6)).max())
               for k in b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the batched scorer")
    add_machine_args(p)
    args = p.parse_args()
    set_threads(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(OmegaConf.load(REPO / "conf" / "model" / "resnet56.yaml"), 10).to(device).eval()
    layers = [m for g in channel_groups(model, (3, 32, 32)) for m in g.members]
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, 32, 32, generator=gen).to(device)
    batches = [(x, torch.zeros(len(x), dtype=torch.long, device=device)) for x in images.split(args.batch_size)]
    maps_per_image = sum(model.get_submodule(m.conv).out_channels for m in layers)

    timed(lambda: nuclear(model, layers, batches[:1], 0), device)  # warm-up
    runs = [timed(lambda: nuclear(model, layers, batches, 0), device) for _ in range(args.repeats)]
    batched_s, ours = statistics.median(t for t, _ in runs), runs[0][1]
    one_pass_s, one_pass = timed(lambda: looped(model, layers, batches, one_pass=True), device)
    hrank_s, hrank_style = timed(lambda: looped(model, layers, batches, one_pass=False), device)
    forward_s, _ = timed(lambda: forward_only(model, batches), device)

    record = {
        "benchmark": "nuclear_scoring", "model": "resnet56 (random init)", "images": args.images,
        "batch_size": args.batch_size, "layers": len(layers), "maps_per_image": maps_per_image,
        "maps_total": maps_per_image * args.images,
        "batched_s": batched_s, "batched_runs_s": [t for t, _ in runs], "per_map_one_pass_s": one_pass_s,
        "hrank_style_s": hrank_s, "forward_pass_s": forward_s,
        "speedup_vs_hrank_style": hrank_s / batched_s, "speedup_vs_per_map_one_pass": one_pass_s / batched_s,
        "max_rel_diff_vs_one_pass": max_relative_difference(ours, one_pass),
        "max_rel_diff_vs_hrank_style": max_relative_difference(ours, hrank_style),
        "device": device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "git_sha": code_version(*SOURCES), "command": command_line(), "timestamp": utc_timestamp(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "scoring.json", record)
    (args.out / "scoring.md").write_text(
        "# Nuclear-norm scoring speed, ResNet-56\n\n"
        f"Mean nuclear norm of every channel's feature map for {len(layers)} prunable convs "
        f"({maps_per_image:,} maps per image) over {args.images} random 32x32 images in batches of "
        f"{args.batch_size}, random weights, float32 maps.\n\n"
        "| scorer | time | ours is faster by |\n|---|---|---|\n"
        f"| batched, one pass (ours; median of {args.repeats}) | {batched_s:.1f} s | |\n"
        f"| per-map loop, one pass | {one_pass_s:.1f} s | {record['speedup_vs_per_map_one_pass']:.1f}x |\n"
        f"| HRank-style: one pass per layer, per-map loop | {hrank_s:.1f} s | **{record['speedup_vs_hrank_style']:.1f}x** |\n\n"
        f"One forward pass over the images alone: {forward_s:.2f} s.  Largest relative difference of our scores "
        f"from the loops': {record['max_rel_diff_vs_hrank_style']:.1e}.\n\n"
        + footer(record)
    )
    print((args.out / "scoring.md").read_text())


if __name__ == "__main__":
    main()
