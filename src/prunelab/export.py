"""Export a saved run's model for deployment: python -m prunelab.export RUN_DIR [--format onnx|pt2|torchscript]

Rebuilds the final model from RUN_DIR/model.pt, takes its deploy form with BatchNorm folded (what runs
time, `measure/latency.py`), writes it next to model.pt (`model.onnx`, `model.pt2` or `model.ts`, or
`--out PATH`), reloads the written file, checks on random images of the run's input shape that it computes
PyTorch's logits (max abs difference printed; above `--tolerance` the export fails), and prints the latency
of both at `--batch` (medians) as one JSON line.

- onnx: the `torch.export`-based exporter (`torch.onnx.export(..., dynamo=True)`, needs onnxscript), the
  batch dimension dynamic; where it cannot capture a model, the legacy TorchScript-based exporter, with the
  reason printed on one line (and in the JSON's `fallback`).  Run in onnxruntime on the CPU.
- pt2: the `torch.export` program (`torch.export.save`), reloaded with `torch.export.load`.
- torchscript: `torch.jit.trace`, offered while torch ships it; PyTorch deprecates TorchScript in favour of
  `torch.export`, so pt2 is its successor here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunelab.config import dataset_config
from prunelab.data.in_memory import random_like
from prunelab.errors import UserError, cli, one_line
from prunelab.evaluate import model_path, run_config
from prunelab.measure.latency import inference_form
from prunelab.storage import failed_writes
from prunelab.train import checkpoint as ckpt

TORCHSCRIPT = hasattr(torch, "jit") and hasattr(torch.jit, "trace")  # offered only while torch ships it
FORMATS = {"onnx": "model.onnx", "pt2": "model.pt2", **({"torchscript": "model.ts"} if TORCHSCRIPT else {})}
EXPORT_BATCH = 2  # the example batch programs are captured at; the batch dimension stays dynamic
QUIET_LOGGERS = ("onnxscript", "onnx_ir")  # their INFO lines narrate the ONNX graph optimisation


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn` in ms over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The ONNX optimiser's progress logging off while exporting (its warnings still show)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _example(shape: tuple[int, ...]) -> torch.Tensor:
    """The images every exporter captures or traces the model on."""
    return torch.randn(EXPORT_BATCH, *shape, generator=torch.Generator().manual_seed(1))


def exported_program(model: nn.Module, shape: tuple[int, ...]) -> torch.export.ExportedProgram:
    """`model` captured by `torch.export` with a dynamic batch dimension."""
    with torch.no_grad():
        return torch.export.export(model, (_example(shape),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))


def write_onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> str | None:
    """`model` as ONNX at `path` (input "images", output "logits", batch dynamic) by the `torch.export`-based
    exporter; where that fails, by the legacy exporter, and the reason is returned (None: no fallback)."""
    try:
        import onnxscript  # noqa: F401  (the torch.export-based exporter's ONNX builder)

        with _quiet_exporters():
            torch.onnx.export(exported_program(model, shape), (), str(path), input_names=["images"],
                              output_names=["logits"], dynamo=True, external_data=False, verbose=False)
        return None
    except Exception as err:  # noqa: BLE001 (any capture or translation failure: the legacy path may still work)
        reason = (f"{err.name} is not installed (pip install {err.name})" if isinstance(err, ImportError) and err.name
                  else f"{type(err).__name__}: {one_line(err)[:200]}")
    print(f"{path}: the torch.export-based ONNX exporter failed ({reason}); used the legacy exporter",
          file=sys.stderr)
    with warnings.catch_warnings():  # the line above says it is the legacy exporter; its folding notes are speed only
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(model, (_example(shape),), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return reason


def onnx_session(model: nn.Module, x: torch.Tensor, path: Path):  # noqa: ANN201 (an onnxruntime.InferenceSession)
    """`model` exported to ONNX at `path` (`write_onnx`, at the shape of the images `x`) and opened in
    onnxruntime on the CPU."""
    return _onnx(model, tuple(x.shape[1:]), path)[0]


def _onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> tuple[Any, str | None]:
    """(onnxruntime session of `model` written to `path`, the legacy fallback's reason or None)."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("--format onnx needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    fallback = write_onnx(model, shape, path)
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]), fallback


@contextmanager
def _torchscript_deprecation_stated() -> Iterator[None]:
    """torch's FutureWarnings that TorchScript is deprecated, off: the module docstring and the JSON say so."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def _exported(fmt: str, model: nn.Module, shape: tuple[int, ...], out: Path) -> tuple[Callable, str, dict]:
    """Write `model` as `fmt` at `out` and reload it: (forward of the reloaded file, runtime, extra fields)."""
    if fmt == "onnx":
        session, fallback = _onnx(model, shape, out)
        return (lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0]),
                f"onnxruntime {version('onnxruntime')}",
                {"exporter": "legacy" if fallback else "torch.export", "fallback": fallback})
    if fmt == "pt2":
        try:
            program = exported_program(model, shape)
        except Exception as err:  # noqa: BLE001 (torch.export's capture errors have no common base)
            raise UserError(f"--format pt2: torch.export cannot capture this model ({type(err).__name__}: "
                            f"{one_line(err)[:200]}); use --format onnx") from None
        torch.export.save(program, str(out))
        loaded = torch.export.load(str(out)).module()
        return loaded, f"torch.export {torch.__version__}", {}
    with _torchscript_deprecation_stated(), torch.no_grad():
        torch.jit.trace(model, _example(shape)).save(str(out))
        loaded = torch.jit.load(str(out))
    return loaded, "torchscript", {"note": "TorchScript is deprecated in PyTorch; --format pt2 is its successor"}


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
        raise UserError(f"--out {out} is a file of the run itself: give another path (the defaults are "
                        f"{', '.join(str(path.with_name(name)) for name in FORMATS.values())})")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist: create it or give another path")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"--out {out}: cannot write in {out.parent}: give a path in a folder you can write to")


def export(target: Path, fmt: str = "onnx", out: Path | None = None, batch: int = 1, repeats: int = 20,
           tolerance: float = 1e-4) -> dict[str, Any]:
    """Write the deploy form of the run at `target` as `fmt`, check it and time it (module docstring)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: choose one of {', '.join(sorted(FORMATS))}")
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
    with failed_writes({"--out": out.parent}):
        forward, runtime, fields = _exported(fmt, model, shape, out)
    with torch.no_grad(), _torchscript_deprecation_stated():
        exported = forward(x)
        exported_ms = median_ms(lambda: forward(x), repeats)
    diff = float((exported - reference).abs().max())
    if not diff <= tolerance:
        raise UserError(f"{out}: the exported model's logits differ from PyTorch's by {diff:.2e} (> --tolerance "
                        f"{tolerance:g}); the export is not faithful")
    return {"file": str(out), "format": fmt, "max_abs_diff": diff, "batch": batch, "pytorch_ms": torch_ms,
            "exported_ms": exported_ms, "runtime": runtime, "threads": torch.get_num_threads(), **fields}


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
