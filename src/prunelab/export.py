"""Export a saved run's model for deployment: python -m prunelab.export RUN_DIR [--format onnx|torchscript]

Rebuilds the final model from RUN_DIR/model.pt, takes its deploy form with BatchNorm folded (what runs
time, `measure/latency.py`), writes it next to model.pt (`model.onnx` or `model.ts`, or `--out PATH`),
checks on random images of the run's input shape that the exported file computes PyTorch's logits
(max abs difference printed; above `--tolerance` the export fails), and prints the latency of both at
`--batch` (onnxruntime on the CPU for ONNX, the TorchScript module for torchscript; medians) as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunelab.config import dataset_config
from prunelab.data.in_memory import random_like
from prunelab.errors import UserError, cli
from prunelab.evaluate import model_path, run_config
from prunelab.measure.latency import inference_form
from prunelab.train import checkpoint as ckpt

FORMATS = {"onnx": "model.onnx", "torchscript": "model.ts"}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn` in ms over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def onnx_session(model: nn.Module, x: torch.Tensor, path: Path):  # noqa: ANN201 (an onnxruntime.InferenceSession)
    """`model` exported to ONNX at `path` (batch dimension dynamic) and opened in onnxruntime on the CPU."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("--format onnx needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_options(path: Path, out: Path, batch: int, repeats: int, tolerance: float) -> None:
    """A `UserError` for an option that would fail after the export, or overwrite a file of the run (`path`: its
    model.pt)."""
    if batch < 1:
        raise UserError(f"--batch {batch}: give a batch size >= 1")
    if repeats < 1:
        raise UserError(f"--repeats {repeats}: give a number of timed calls >= 1")
    if not tolerance >= 0:
        raise UserError(f"--tolerance {tolerance}: give a number >= 0")
    if out.resolve() in {p.resolve() for p in (path, path.with_name("metrics.json"), path.with_name("history.csv"))}:
        raise UserError(f"--out {out} is a file of the run itself: give another path (the default is "
                        f"{path.parent / FORMATS['onnx']} or {FORMATS['torchscript']})")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist: create it or give another path")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"--out {out}: cannot write in {out.parent}: give a path in a folder you can write to")


def export(target: Path, fmt: str = "onnx", out: Path | None = None, batch: int = 1, repeats: int = 20,
           tolerance: float = 1e-4) -> dict[str, Any]:
    """Write the deploy form of the run at `target` as `fmt`, check it and time it (module docstring)."""
    path = model_path(target)
    out = out or path.with_name(FORMATS[fmt])
    check_options(path, out, batch, repeats, tolerance)
    payload = ckpt.load(path, key="export")
    cfg = run_config(payload, [])
    shape = tuple(random_like(dataset_config(cfg, cfg.dataset)).input_shape)
    model: nn.Module = inference_form(ckpt.model_from_payload(payload, path, key="export").float().eval(), shape)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
        torch_ms = median_ms(lambda: model(x), repeats)
    if fmt == "onnx":
        session = onnx_session(model, x, out)
        feed = {"images": x.numpy()}
        exported = torch.from_numpy(session.run(None, feed)[0])
        exported_ms = median_ms(lambda: session.run(None, feed), repeats)
        runtime = f"onnxruntime {version('onnxruntime')}"
    else:
        with torch.no_grad():
            traced = torch.jit.trace(model, x)
        traced.save(str(out))
        loaded = torch.jit.load(str(out))
        with torch.no_grad():
            exported = loaded(x)
            exported_ms = median_ms(lambda: loaded(x), repeats)
        runtime = "torchscript"
    diff = float((exported - reference).abs().max())
    if not diff <= tolerance:
        raise UserError(f"{out}: the exported model's logits differ from PyTorch's by {diff:.2e} (> --tolerance "
                        f"{tolerance:g}); the export is not faithful")
    return {"file": str(out), "format": fmt, "max_abs_diff": diff, "batch": batch, "pytorch_ms": torch_ms,
            "exported_ms": exported_ms, "runtime": runtime, "threads": torch.get_num_threads()}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m prunelab.export", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run dir or its model.pt")
    p.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args(argv)
    return cli(lambda: print(json.dumps(export(args.run, args.format, args.out, args.batch, args.repeats,
                                               args.tolerance))))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
