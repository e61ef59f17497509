"""The CUDA check in one command (at most 8 minutes on one H100): tests, training throughput, scoring, latency.

    PYTHONPATH=src python experiments/gpu_check.py                            # on a CUDA machine
    python experiments/gpu_check.py --device cpu --tiny --out /tmp/gpu       # a rehearsal on the CPU, seconds

In one process, each part timed and recorded even when another fails:

1. tests: the `gpu`-marked tests (tests/test_gpu.py: every method one tiny run with bf16 + channels_last under
   debug=fast, one run compiled, LRPET's projection), in a pytest subprocess;
2. throughput: ResNet-56 training on a 50,000-image CIFAR-shaped random uint8 tensor on the device, our loop with
   torch.compile off and on, and a DataLoader + PIL loop (torchvision's CIFAR transforms) on the same model
   (experiments/bench_training.py's loops; s/epoch and images/s after the first epoch, which is reported apart);
3. scoring: nuclear-norm scoring of every prunable ResNet-56 conv, our batched pass against the per-map loop and
   the HRank-style loop (experiments/bench_scoring.py's loops; ms per image, the loops on fewer images);
4. latency: every method's deploy form (the structure `prunelab.profile` builds, random weights) against the dense
   ResNet-56 at batch 256, bf16 + channels_last on CUDA (measure/latency.py).

Writes <out>/gpu.json (after every part, so a cut-off run keeps what it measured) and <out>/gpu.md with the device,
torch version, command and git sha (`--git-sha SHA` for a copy of the tree without its .git).  `--tiny` shrinks
everything (ResNet-20, 64 images, batch 2; compile only on CUDA).  A part that would start after `--budget-s`
seconds is not run, and said so.  Exit status 1 when a part failed or a test did not pass.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from bench import REPO, add_machine_args, code_version, footer, set_threads, timed
from bench_scoring import looped, max_relative_difference
from bench_training import dataloader_loop, ours
from prunelab.config import compose_config
from prunelab.measure import count
from prunelab.measure.latency import measure_latency
from prunelab.methods.criteria import nuclear
from prunelab.models import build_model
from prunelab.profile import compressed
from prunelab.record import command_line, device_name, utc_timestamp, write_json_atomic
from prunelab.surgery import channel_groups

SOURCES = ("experiments/gpu_check.py", "experiments/bench_training.py", "experiments/bench_scoring.py",
           "tests/test_gpu.py", "src/prunelab")
METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
STRUCTURE = {  # a method whose structure without training would be the dense one: what it is priced at
    "basis": ["method.keep=0.2"],
    "double": ["method.keep=0.2"],
}


@dataclass(frozen=True)
class Sizes:
    """How big each part is."""

    model: str  # scoring, throughput and latency model
    images: int  # throughput: training images
    epochs: int  # throughput: epochs per loop (the last one is reported)
    workers: int  # throughput: DataLoader workers
    scoring_images: int  # scoring: images of the batched pass
    loop_images: int  # scoring: images of the per-map loops
    scoring_batch: int
    latency_batch: int
    min_run_time: float  # latency: seconds of timed runs per figure
    tests_timeout_s: int


FULL = Sizes("resnet56", 50_000, 2, min(8, os.cpu_count() or 1), 640, 16, 128, 256, 0.5, 300)
TINY = Sizes("resnet20", 64, 2, 0, 16, 2, 8, 2, 0.01, 120)


def gpu_tests(device: torch.device, sizes: Sizes, tiny: bool, timeout: float) -> dict[str, Any]:
    """tests/test_gpu.py in a pytest subprocess on `device`: counts and every test's outcome (JUnit XML)."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "gpu-tests.xml"
        command = ["-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                   *(["-k", "bf16 and l1"] if tiny else [])]
        shown = shlex.join([f"PRUNELAB_GPU_TEST_DEVICE={device.type}", "python", *command])
        env = {**os.environ, "PRUNELAB_GPU_TEST_DEVICE": device.type}
        try:
            done = subprocess.run([sys.executable, *command, f"--junitxml={junit}"], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"command": shown, "error": f"timed out after {timeout:.0f} s"}
        if not junit.is_file():
            return {"command": shown, "error": (done.stdout + done.stderr).strip()[-2000:]}
        tests = []
        for case in ET.parse(junit).getroot().iter("testcase"):
            problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
            outcome = "passed" if problem is None else {"failure": "failed"}.get(problem.tag, problem.tag)
            message = "" if problem is None else (problem.get("message") or "").splitlines()[0][:300]
            tests.append({"name": case.get("name"), "outcome": outcome, "time_s": float(case.get("time", 0)),
                          "message": message})
    counts = {f"{k}s" if k == "error" else k: sum(t["outcome"] == k for t in tests)
              for k in ("passed", "failed", "error", "skipped")}
    return {"command": shown, "exit_status": done.returncode, **counts, "tests": tests}


def throughput(device: torch.device, sizes: Sizes, tiny: bool) -> dict[str, Any]:
    """Training throughput of the same model and data: our loop (compile off, on) and a DataLoader + PIL loop."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (sizes.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (sizes.images,), generator=gen)
    loops: dict[str, Any] = {"ours": ours(images, labels, device, sizes.epochs, False, sizes.model)}
    if tiny and device.type == "cpu":
        loops["ours_compiled"] = {"not_run": "torch.compile takes minutes on a CPU: not in a --tiny CPU rehearsal"}
    else:
        loops["ours_compiled"] = ours(images, labels, device, sizes.epochs, True, sizes.model)
    loops["dataloader_pil"] = dataloader_loop(images, labels, device, sizes.epochs, sizes.workers, sizes.model)
    return {"model": sizes.model, "images": sizes.images, "epochs": sizes.epochs, "workers": sizes.workers,
            "batch_size": 128, "loops": loops}


def scoring(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Nuclear-norm scores of every prunable conv: the batched pass against the per-map and HRank-style loops."""
    torch.manual_seed(0)
    model = build_model(OmegaConf.load(REPO / "conf" / "model" / f"{sizes.model}.yaml"), 10).to(device).eval()
    layers = [m for g in channel_groups(model, (3, 32, 32)) for m in g.members]
    images = torch.randn(sizes.scoring_images, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    batches = [(x, torch.zeros(len(x), dtype=torch.long, device=device)) for x in images.split(sizes.scoring_batch)]
    few = [(images[:sizes.loop_images], torch.zeros(sizes.loop_images, dtype=torch.long, device=device))]
    timed(lambda: nuclear(model, layers, batches[:1], 0), device)  # warm-up
    batched_s, _ = timed(lambda: nuclear(model, layers, batches, 0), device)
    _, ours_few = timed(lambda: nuclear(model, layers, few, 0), device)
    per_map_s, per_map = timed(lambda: looped(model, layers, few, one_pass=True), device)
    hrank_s, hrank_style = timed(lambda: looped(model, layers, few, one_pass=False), device)
    batched_ms, n = 1e3 * batched_s / sizes.scoring_images, sizes.loop_images
    return {"model": f"{sizes.model} (random init)", "layers": len(layers), "images": sizes.scoring_images,
            "loop_images": n, "batch_size": sizes.scoring_batch,
            "batched_ms_per_image": batched_ms, "per_map_ms_per_image": 1e3 * per_map_s / n,
            "hrank_style_ms_per_image": 1e3 * hrank_s / n,
            "speedup_vs_per_map": 1e3 * per_map_s / n / batched_ms,
            "speedup_vs_hrank_style": 1e3 * hrank_s / n / batched_ms,
            "max_rel_diff": max(max_relative_difference(ours_few, per_map),
                                max_relative_difference(ours_few, hrank_style))}


def latency(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Every method's deploy form against the dense model at one batch size (bf16 + channels_last on CUDA)."""
    cuda, rows = device.type == "cuda", []
    for method in METHODS:
        overrides = [f"method={method}", f"model={sizes.model}", "dataset=cifar10", *STRUCTURE.get(method, [])]
        dense, model, data, built, _ = compressed(compose_config(overrides))
        shape = tuple(data.input_shape)
        base, cost = count(dense, shape), count(model, shape)
        timing = measure_latency(model.to(device), dense.to(device), shape, [sizes.latency_batch], autocast=cuda,
                                 channels_last=cuda, min_run_time=sizes.min_run_time)[f"batch_{sizes.latency_batch}"]
        rows.append({"method": built.label, "overrides": overrides, "macs": cost.macs, "base_macs": base.macs,
                     "macs_speedup": base.macs / cost.macs, **timing})
    return {"batch": sizes.latency_batch, "autocast": cuda, "channels_last": cuda, "min_run_time": sizes.min_run_time,
            "rows": rows}


def markdown(record: dict[str, Any]) -> str:
    """gpu.md: one short section per part, then the provenance footer."""
    parts = record["parts"]
    lines = [f"# GPU check ({record['device']})", "",
             f"{'A --tiny rehearsal: sizes shrunk, the numbers are not measurements.  ' if record['tiny'] else ''}"
             f"Parts took {record['total_s']:.0f} s.", ""]
    for name, part in parts.items():
        if "error" in part or "not_run" in part:
            problem = part.get("error") or part["not_run"]
            lines += [f"## {name}", "", f"{'Error' if 'error' in part else 'Not run'}: {problem.splitlines()[-1]}", ""]
    tests = parts.get("tests", {})
    if "tests" in tests:
        lines += ["## gpu-marked tests", "", f"{tests['passed']} passed, {tests['failed']} failed, {tests['errors']} "
                  f"errors, {tests['skipped']} skipped: `{tests['command']}`", ""]
        lines += [f"- {t['name']}: {t['outcome']} {t['message']}" for t in tests["tests"] if t["outcome"] != "passed"]
    speed = parts.get("throughput", {})
    if "loops" in speed:
        lines += ["", f"## Training throughput, {speed['model']}, {speed['images']:,} images, batch 128", "",
                  "| loop | s / epoch | images / s | first epoch (s) |", "|---|---:|---:|---:|"]
        for name, loop in speed["loops"].items():
            lines.append(f"| {name} | not run | | |" if "not_run" in loop else
                         f"| {name} | {loop['s_per_epoch']:.2f} | {loop['images_per_s']:,.0f} | "
                         f"{loop['first_epoch_s']:.1f} |")
    score = parts.get("scoring", {})
    if "layers" in score:
        lines += ["", f"## Nuclear-norm scoring, {score['model']}, {score['layers']} convs", "",
                  "| scorer | ms / image | ours is faster by |", "|---|---:|---:|",
                  f"| batched, one pass (ours; {score['images']} images) | {score['batched_ms_per_image']:.2f} | |",
                  f"| per-map loop, one pass ({score['loop_images']} images) | {score['per_map_ms_per_image']:.1f} | "
                  f"{score['speedup_vs_per_map']:.0f}x |",
                  f"| HRank-style, a pass per layer ({score['loop_images']} images) | "
                  f"{score['hrank_style_ms_per_image']:.1f} | {score['speedup_vs_hrank_style']:.0f}x |", "",
                  f"Largest relative difference of the scores: {score['max_rel_diff']:.1e}."]
    lat = parts.get("latency", {})
    if "rows" in lat:
        lines += ["", f"## Deploy-form latency at batch {lat['batch']} (bf16 + channels_last: {lat['autocast']})", "",
                  "| method | MACs × | ms | dense ms | measured × |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['macs_speedup']:.2f} | {r['ms']:.2f} | {r['dense_ms']:.2f} | "
                  f"{r['speedup']:.2f} |" for r in lat["rows"]]
    return "\n".join(lines) + "\n\n" + footer(record)


def run_part(fn: Callable[[], dict[str, Any]], started: float, budget_s: float) -> dict[str, Any]:
    """`fn()` timed; its exception as an `error` entry; skipped when the budget is spent."""
    if time.perf_counter() - started > budget_s:
        return {"not_run": f"the budget of {budget_s:.0f} s was spent before this part"}
    begun = time.perf_counter()
    try:
        out = fn()
    except Exception:  # noqa: BLE001  (one part's failure must not lose the others' numbers)
        out = {"error": traceback.format_exc(limit=3).strip()}
    return {**out, "seconds": time.perf_counter() - begun}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="shrink every part to seconds (a rehearsal)")
    p.add_argument("--budget-s", type=float, default=450, help="start no part after this many seconds")
    p.add_argument("--git-sha", help="the code's sha, for a copy of the tree without .git (default: read from git)")
    add_machine_args(p)
    args = p.parse_args()
    set_threads(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device here (use --device cpu --tiny for a rehearsal)", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    sizes = TINY if args.tiny else FULL
    record: dict[str, Any] = {
        "benchmark": "gpu_check", "tiny": args.tiny, "sizes": asdict(sizes), "device": device_name(device),
        "torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
        "git_sha": args.git_sha or code_version(*SOURCES), "command": command_line(), "timestamp": utc_timestamp(),
        "parts": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    parts = {
        "tests": lambda: gpu_tests(device, sizes, args.tiny,
                                   min(sizes.tests_timeout_s, args.budget_s - (time.perf_counter() - started))),
        "throughput": lambda: throughput(device, sizes, args.tiny),
        "scoring": lambda: scoring(device, sizes),
        "latency": lambda: latency(device, sizes),
    }
    for name, fn in parts.items():
        print(f"gpu_check: {name} ...", flush=True)
        record["parts"][name] = run_part(fn, started, args.budget_s)
        record["total_s"] = time.perf_counter() - started
        write_json_atomic(args.out / "gpu.json", record)
    (args.out / "gpu.md").write_text(markdown(record))
    print((args.out / "gpu.md").read_text())
    tests = record["parts"]["tests"]
    failed = any("error" in part for part in record["parts"].values())
    return 1 if failed or tests.get("failed") or tests.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
