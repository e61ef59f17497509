"""Basis pruning's two costs: decomposing a whole network, and one Taylor scoring pass against a training epoch.

    python experiments/bench_basis.py [--device cpu] [--batches 10] [--batch-size 64] [--threads N]

1. Decomposition: every ungrouped conv of torchvision's ResNet-50 (random weights, 53 convs) replaced by its
   full-rank `BasisConv2d`, with the SVDs batched by weight shape in float64 (`layers.basis.decompose`),
   against the same decomposition one layer (one SVD call) at a time; both include copying the model.
2. Scoring: the Taylor score (s dL/ds)^2 over `--batches` minibatches (`methods.rounds.taylor_scores`: one
   forward and one backward pass per batch, gradients for the scales only) against `--batches` training
   steps of the basis stage (forward, backward, Adam step on scales + head) of a decomposed CIFAR ResNet-56.
   A scoring pass over an epoch's batches costs at most the epoch itself when this ratio is <= 1.
Writes results/bench/basis.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bench import REPO, add_machine_args, code_version, footer, set_threads, timed
from prunelab.layers.basis import basis_layers, decompose
from prunelab.methods.basis import decomposable
from prunelab.methods.rounds import Unit, taylor_scores
from prunelab.models import build_model
from prunelab.models.hub import classifier_of
from prunelab.record import command_line, device_name, utc_timestamp, write_json_atomic

SOURCES = ("src/prunelab/layers/basis.py", "src/prunelab/layers/matrix.py", "src/prunelab/methods/rounds.py",
           "experiments/bench_basis.py")


def per_layer(model: torch.nn.Module, names: list[str]) -> torch.nn.Module:
    """The same decomposition, one SVD call per layer."""
    for name in names:
        decompose(model, [name])
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    add_machine_args(p)
    args = p.parse_args()
    set_threads(args)
    device = torch.device(args.device)

    torch.manual_seed(0)
    resnet50 = build_model({"arch": "hub", "name": "resnet50", "source": "torchvision"}, 1000).to(device).eval()
    names = decomposable(resnet50)[0]
    batched = [timed(lambda: decompose(copy.deepcopy(resnet50), names), device)[0] for _ in range(args.repeats)]
    looped = [timed(lambda: per_layer(copy.deepcopy(resnet50), names), device)[0] for _ in range(args.repeats)]

    torch.manual_seed(0)
    model = build_model(OmegaConf.load(REPO / "conf" / "model" / "resnet56.yaml"), 10).to(device)
    model = decompose(model, decomposable(model)[0]).eval()  # BatchNorm frozen, as in the basis stage
    layers = basis_layers(model)
    units = {n: Unit(m.scaling.scale, m.scaling.mask, m.scaling.sigma) for n, m in layers.items()}
    trained = [m.scaling.scale for m in layers.values()] + list(classifier_of(model).parameters())
    for param in model.parameters():
        param.requires_grad_(any(param is t for t in trained))
    optimizer = torch.optim.Adam(trained, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch_size, 3, 32, 32, generator=gen).to(device),
                torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)) for _ in range(args.batches)]

    def train_steps() -> None:
        for images, labels in batches:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    timed(train_steps, device)  # warm-up
    scoring, training = [], []
    for _ in range(args.repeats):  # round-robin, so both see the same machine load
        scoring.append(timed(lambda: taylor_scores(model, units, batches), device)[0])
        training.append(timed(train_steps, device)[0])

    record = {
        "benchmark": "basis", "decompose_model": "resnet50 (torchvision, random init)", "decomposed_convs": len(names),
        "decompose_batched_s": statistics.median(batched), "decompose_per_layer_s": statistics.median(looped),
        "scoring_model": "resnet56 (CIFAR, decomposed)", "basis_layers": len(layers), "batches": args.batches,
        "batch_size": args.batch_size, "taylor_scoring_s": statistics.median(scoring),
        "training_steps_s": statistics.median(training),
        "scoring_over_training": statistics.median(scoring) / statistics.median(training),
        "repeats": args.repeats, "device": device_name(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "git_sha": code_version(*SOURCES), "command": command_line(),
        "timestamp": utc_timestamp(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "basis.json", record)
    (args.out / "basis.md").write_text(
        "# Basis pruning costs\n\n"
        f"Decomposing torchvision's ResNet-50 ({len(names)} ungrouped convs, float64 SVDs batched by weight shape, "
        f"copying the weights into `BasisConv2d` layers): {record['decompose_batched_s']:.2f} s (median of "
        f"{args.repeats}); one SVD call per layer: {record['decompose_per_layer_s']:.2f} s.\n\n"
        f"Taylor scoring pass over {args.batches} batches of {args.batch_size} on the decomposed CIFAR ResNet-56 "
        f"({len(layers)} basis layers): {record['taylor_scoring_s']:.2f} s; {args.batches} training steps of the "
        f"basis stage on the same batches: {record['training_steps_s']:.2f} s; ratio "
        f"{record['scoring_over_training']:.2f} (<= 1: a scoring pass costs at most the epoch it scores).\n\n"
        + footer(record)
    )
    print((args.out / "basis.md").read_text())


if __name__ == "__main__":
    main()
