"""MACs are not speed: each method's MAC speed-up against its measured speed-up, eager PyTorch and onnxruntime.

    python experiments/bench_latency.py [--batch 1 64] [--min-run-time 0.5] [--threads N] [--out results/bench]

For one configuration per method on the paper models (random weights, the structure `prunelab.profile`
builds: prepare, structural setups, anticipate, finalize), the deploy form with BatchNorm folded is timed
against the dense model's (`measure/latency.py`: interleaved, medians of blocked runs) and, exported to
ONNX, in onnxruntime (medians); channel pruners with and without `round_to=8`; the ImageNet ResNet-50
(torchvision, pruned through Torch-Pruning) at batch 1 only.  Writes
results/bench/latency.{json,md} and results/plots/latency-speedup.png (measured against MAC speed-up, the
diagonal drawn: points under it are slower than their MACs promise).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench import REPO, add_machine_args, code_version, footer, set_threads
from prunelab.config import compose_config
from prunelab.export import median_ms, onnx_session
from prunelab.measure import count
from prunelab.measure.latency import inference_form, measure_latency
from prunelab.profile import compressed
from prunelab.record import command_line, device_name, utc_timestamp, write_json_atomic
from prunelab.report.plots import finish_axes, new_figure, save_png

SOURCES = ("src/prunelab/measure/latency.py", "src/prunelab/profile.py", "src/prunelab/export.py",
           "experiments/bench_latency.py")
CONFIGS = [  # (label, overrides)
    ("l1 0.6", ["model=resnet56", "method=l1", "method.ratio=0.6"]),
    ("l1 0.6 round_to=8", ["model=resnet56", "method=l1", "method.ratio=0.6", "method.round_to=8"]),
    ("nuclear HRankPlus rates", ["model=resnet56", "method=nuclear", "method.compress_rate='[0.]+[0.15]*2+[0.4]*27'"]),
    ("lrpet g=0.57", ["model=resnet56", "method=lrpet"]),
    ("basis keep 0.2", ["model=resnet56", "method=basis", "method.keep=0.2"]),
    ("cst 0.5 (uniform)", ["model=resnet56", "method=cst", "method.rate=0.5"]),
    ("vgg16 l1 0.5", ["model=vgg16", "method=l1", "method.ratio=0.5"]),
    ("vgg16 l1 0.5 round_to=8", ["model=vgg16", "method=l1", "method.ratio=0.5", "method.round_to=8"]),
    ("vgg16_cst cst 0.5 (uniform)", ["model=vgg16_cst", "method=cst", "method.rate=0.5"]),
    ("hub resnet50 l1 0.5", ["model=resnet50_imagenet", "model.pretrained=false", "dataset=imagenet", "method=l1",
                             "method.ratio=0.5"]),
    ("hub resnet50 l1 0.5 round_to=8", ["model=resnet50_imagenet", "model.pretrained=false", "dataset=imagenet",
                                        "method=l1", "method.ratio=0.5", "method.round_to=8"]),
]
ONE_IMAGE = ("hub resnet50",)  # 224 px ImageNet models are timed at batch 1 only (a 2-core CPU)


def onnx_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    """Median onnxruntime time of `model` exported to ONNX (CPU provider)."""
    with tempfile.TemporaryDirectory() as tmp:
        session = onnx_session(model, x, Path(tmp) / "model.onnx")
    feed = {"images": x.numpy()}
    return median_ms(lambda: session.run(None, feed), repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--min-run-time", type=float, default=0.5)
    p.add_argument("--only", nargs="*", default=None, help="labels of CONFIGS to run (default: all)")
    add_machine_args(p)
    args = p.parse_args()
    set_threads(args)
    rows = []
    for label, overrides in CONFIGS:
        if args.only is not None and label not in args.only:
            continue
        dense, model, data, _, _ = compressed(compose_config(overrides))
        shape = tuple(data.input_shape)
        base, cost = count(dense, shape), count(model, shape)
        batches = [1] if label.startswith(ONE_IMAGE) else args.batch
        latency = measure_latency(model, dense, shape, batches, min_run_time=args.min_run_time)
        x = torch.randn(max(batches), *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ort = {"dense": onnx_ms(inference_form(dense, shape), x), "model": onnx_ms(inference_form(model, shape), x)}
        rows.append({"config": label, "overrides": overrides, "batches": batches, "macs": cost.macs, "base_macs": base.macs,
                     "macs_speedup": base.macs / cost.macs, "latency": latency,
                     "onnxruntime_ms": ort["model"], "onnxruntime_dense_ms": ort["dense"],
                     "onnxruntime_speedup": ort["dense"] / ort["model"]})
        print(f"{label}: MACs x{base.macs / cost.macs:.2f}, eager x{latency[f'batch_{max(batches)}']['speedup']:.2f}, "
              f"onnxruntime x{ort['dense'] / ort['model']:.2f}", flush=True)
    record = {"benchmark": "latency", "batches": args.batch, "rows": rows, "device": device_name(torch.device("cpu")),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "git_sha": code_version(*SOURCES),
              "command": command_line(), "timestamp": utc_timestamp()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "latency.json", record)
    big = max(args.batch)
    lines = ["| config | MACs × | eager × (batches) | onnxruntime × (largest batch) | eager ms, dense ms (largest) |",
             "|---|---|---|---|---|"]
    for r in rows:
        eager = ", ".join(f"{r['latency'][f'batch_{b}']['speedup']:.2f} (b{b})" for b in r["batches"])
        timed = r["latency"][f"batch_{max(r['batches'])}"]
        lines.append(f"| {r['config']} | {r['macs_speedup']:.2f} | {eager} | {r['onnxruntime_speedup']:.2f} | "
                     f"{timed['ms']:.1f}, {timed['dense_ms']:.1f} |")
    (args.out / "latency.md").write_text(
        "# Measured speed-up against MAC speed-up\n\n"
        "Random weights, the structure `prunelab.profile` builds (CST: its uniform allocation); deploy forms with "
        "BatchNorm folded; eager PyTorch via `torch.utils.benchmark` (interleaved with the dense model, medians of "
        "blocked runs) and onnxruntime (CPU provider, medians of 20 runs).\n\n" + "\n".join(lines) + "\n\n"
        + footer(record))
    fig, (ax,) = new_figure()
    for r in rows:
        eager = r["latency"][f"batch_{max(r['batches'])}"]["speedup"]
        ax.scatter(r["macs_speedup"], eager, marker="o", color="C0")
        ax.scatter(r["macs_speedup"], r["onnxruntime_speedup"], marker="s", color="C1")
        ax.annotate(r["config"], (r["macs_speedup"], eager), fontsize=6)
    top = max([1.0, *(r["macs_speedup"] for r in rows)]) * 1.05
    ax.plot([1, top], [1, top], color="0.5", linestyle="--", linewidth=1, label="measured = MACs")
    ax.scatter([], [], marker="o", color="C0", label=f"eager PyTorch, batch {big} (ImageNet models: 1)")
    ax.scatter([], [], marker="s", color="C1", label=f"onnxruntime, batch {big} (ImageNet models: 1)")
    fig.suptitle("measured speed-up against MAC speed-up")
    finish_axes(ax, xlabel="MAC speed-up (dense / compressed MACs)", ylabel="measured speed-up (dense / compressed time)",
                title=f"{record['device']}, {record['threads']} threads")
    save_png(fig, REPO / "results" / "plots" / "latency-speedup.png" if args.out == REPO / "results" / "bench"
             else args.out / "latency-speedup.png")
    print((args.out / "latency.md").read_text())


if __name__ == "__main__":
    main()
