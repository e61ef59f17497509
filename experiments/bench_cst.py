"""Cheap spatial transformations, measured: the two forward paths of a compact CST layer against dense convs.

    python experiments/bench_cst.py [--device cpu] [--batch-size 64] [--rate 0.5] [--threads N]

For three convs of the paper's CIFAR models (ResNet-56 stage 3: 64 -> 64 at 8x8; VGG-16: 256 -> 256 at 8x8 and
512 -> 512 at 4x4) with M = N - round(rate N) templates, G = 2, scalar family (random weights), the median
inference time (`torch.utils.benchmark`, blocked autorange, no autograd) of

    dense        the unpruned conv (N filters)
    filter       the compact CST layer's filter path (build the N filters, one conv)
    two_stage    the compact CST layer's two-stage path (per-tap grouped 1x1 GEMMs + shift-scale-sum)
    pruned       a dense conv with N' = round(M + G (N - M) / C) filters: the same MACs as the CST layer

The paper's latency gains need its fused CUDA gather; in PyTorch the two-stage path is a sequence of small
kernels, so expect it to be slower than the filter path.  Writes results/bench/cst.{json,md}.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.utils.benchmark as benchmark
from torch import nn

from bench import add_machine_args, code_version, footer, set_threads
from prunelab.layers.cst import CSTConv2d
from prunelab.methods.cst import uniform_templates
from prunelab.record import command_line, device_name, utc_timestamp, write_json_atomic

SOURCES = ("src/prunelab/layers/cst.py", "experiments/bench_cst.py")
LAYERS = [("resnet56 layer3 conv", 64, 64, 8), ("vgg16 conv 256", 256, 256, 8), ("vgg16 conv 512", 512, 512, 4)]
ARMS = ("dense", "filter", "two_stage", "pruned")


def median_s(fn: Callable[[], torch.Tensor], min_run_time: float) -> float:
    """Median seconds per call of `fn` over blocked runs."""
    return benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()) \
        .blocked_autorange(min_run_time=min_run_time).median


def arms(c: int, n: int, rate: float, device: torch.device) -> tuple[dict[str, nn.Module], int, int]:
    """The four modules of one layer configuration, and (M, N')."""
    torch.manual_seed(0)
    dense = nn.Conv2d(c, n, 3, padding=1, bias=False).to(device).eval()
    layer = CSTConv2d.like(dense, groups=2)
    m = uniform_templates(n, rate, 8)
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    keep[:m] = True
    layer.reassign(keep)
    compact = layer.compact().eval()
    two_stage = layer.compact().eval()
    two_stage.path = "two_stage"
    n_same = round(m + 2 * (n - m) / c)
    pruned = nn.Conv2d(c, n_same, 3, padding=1, bias=False).to(device).eval()
    return {"dense": dense, "filter": compact, "two_stage": two_stage, "pruned": pruned}, m, n_same


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds of blocked runs per measurement")
    add_machine_args(p)
    args = p.parse_args()
    set_threads(args)
    device = torch.device(args.device)
    rows = []
    for label, c, n, side in LAYERS:
        modules, m, n_same = arms(c, n, args.rate, device)
        x = torch.randn(args.batch_size, c, side, side, device=device)
        with torch.no_grad():
            ref = modules["dense"](x)
            assert (modules["filter"](x) - modules["two_stage"](x)).abs().max() <= 1e-3 * ref.abs().max()
            times = {}
            for _ in range(2):  # interleaved: every arm sees the same machine load; the second round counts
                times = {arm: median_s(lambda mod=modules[arm]: mod(x), args.min_run_time) for arm in ARMS}
        macs = {"dense": 9 * c * n * side * side, "cst": modules["filter"].count_macs((x,), ref)}
        rows.append({"layer": label, "in": c, "out": n, "side": side, "templates": m, "pruned_width": n_same,
                     "macs_dense": macs["dense"], "macs_cst": macs["cst"],
                     **{f"{arm}_ms": 1e3 * t for arm, t in times.items()}})
    record = {"benchmark": "cst", "batch_size": args.batch_size, "rate": args.rate, "groups": 2, "family": "scalar",
              "rows": rows, "device": device_name(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "git_sha": code_version(*SOURCES), "command": command_line(),
              "timestamp": utc_timestamp()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "cst.json", record)
    lines = ["| layer | C -> N @ side | M | MACs CST / dense | dense | CST filter path | CST two-stage | "
             "dense pruned to N' (same MACs) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['in']} -> {r['out']} @ {r['side']} | {r['templates']} | "
                     f"{r['macs_cst'] / r['macs_dense']:.3f} | {r['dense_ms']:.3f} ms | {r['filter_ms']:.3f} ms | "
                     f"{r['two_stage_ms']:.3f} ms | {r['pruned_ms']:.3f} ms (N' = {r['pruned_width']}) |")
    (args.out / "cst.md").write_text(
        "# Cheap spatial transformations: inference time of one layer\n\n"
        f"Median time of one forward pass (batch {args.batch_size}, no autograd, `torch.utils.benchmark` blocked "
        f"autorange, arms interleaved) at rate {args.rate:g} (M = N - round(rate N) templates), G = 2, scalar "
        "family, random weights.\n\n" + "\n".join(lines) + "\n\n"
        "The filter path costs a dense conv of N filters plus building them; the two-stage path has the CST MACs "
        "but runs as K^2 small grouped GEMMs and gathers without the paper's fused kernel.\n\n" + footer(record))
    print((args.out / "cst.md").read_text())


if __name__ == "__main__":
    main()
