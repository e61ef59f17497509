"""Measured inference latency of a model against its dense original (docs/design.md, "Cost").

MACs are not speed, so every run also times what it produced: the final model in its deploy form
(`layers.registry.deploy`: low-rank pairs, basis pairs, contracted LOP layers, compacted CST layers), with
each BatchNorm that alone reads a conv's output folded into that conv (`fold_batchnorm`, exact and checked on
the logits before any timing), against the dense model treated the same way, in the same process,
interleaved (dense, compressed, dense, compressed, ...) so that both see the same machine load.  Each figure
is the median of `torch.utils.benchmark` blocked runs (CUDA synchronised by the timer; bf16 autocast and
channels-last on CUDA when the recipe trains so; a fixed thread count on the CPU).  The speed-up is dense time / compressed time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import logging

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunelab.layers.registry import deploy
from prunelab.models.features import exact_surgery, zero_input
from prunelab.models.structure import sole_conv_bn_pairs


FOLD_TOLERANCE = 1e-4  # relative change of the logits that folding may cause (float32 rounding is ~1e-6)


def fold_batchnorm(model: nn.Module, input_shape: tuple[int, ...], tolerance: float = FOLD_TOLERANCE) -> nn.Module:
    """A copy of `model` (eval mode) in which every plain BatchNorm that is the only reader of a conv's output
    (`sole_conv_bn_pairs`) is folded into that conv: W' = W a, b' = (b - mean) a + beta with
    a = gamma / sqrt(var + eps); the BN becomes an identity.  The same function in eval mode (float64-tested),
    and checked: the folded logits are compared with the model's on random images (`exact_surgery`), and a
    relative change above `tolerance` raises RuntimeError before anything uses the folded copy."""
    try:
        folded, _ = exact_surgery(model, input_shape, lambda m: _folded(m, input_shape), "BatchNorm folding",
                                  tolerance)
    except RuntimeError as err:
        raise RuntimeError(f"{err}: the folded model is not the same function; time the unfolded form with "
                           "measure.latency.fold_bn=false") from None
    return folded


@torch.no_grad()
def _folded(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    model = copy.deepcopy(model).eval()
    for conv_name, bn_name in sole_conv_bn_pairs(model, input_shape).items():
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if bn.running_var is None or bn.num_features != conv.out_channels or type(bn).forward is not _BatchNorm.forward:
            continue  # no running statistics, or a subclass that computes more than the normalisation
        scale = (bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)) / torch.sqrt(
            bn.running_var + bn.eps)
        shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
        conv.bias = nn.Parameter(((bias - bn.running_mean) * scale + shift).to(conv.weight.dtype))
        model.set_submodule(bn_name, nn.Identity())
    return model


def configured_latency(cfg: Mapping[str, Any], model: nn.Module, dense: nn.Module, input_shape: tuple[int, ...],
                       device: torch.device) -> dict[str, Any]:
    """`measure_latency` with a run config's `measure.latency` settings (its defaults where the node is off or
    a key unset; batches [1, 64] on the CPU, [256] on CUDA) and, on CUDA, the recipe's bf16 and channels-last."""
    settings = cfg["measure"]["latency"] or {}
    cuda = device.type == "cuda"
    batches = settings.get("batch") or ([256] if cuda else [1, 64])
    return measure_latency(model, dense, input_shape, [int(b) for b in batches],
                           fold_bn=bool(settings.get("fold_bn", True)),
                           autocast=cuda and cfg["trainer"].get("amp") == "bf16",
                           channels_last=cuda and bool(cfg["trainer"].get("channels_last")),
                           min_run_time=float(settings.get("min_run_time", 0.5)))


def inference_form(model: nn.Module, input_shape: tuple[int, ...], fold_bn: bool = True) -> nn.Module:
    """What is timed: the deploy form, BatchNorm folded (with `fold_bn`), eval mode."""
    deployed = deploy(model).eval()
    return fold_batchnorm(deployed, input_shape) if fold_bn else deployed


def _median_s(model: nn.Module, x: torch.Tensor, autocast: bool, min_run_time: float) -> float:
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its CUDA_HOME notice is not ours
    import torch.utils.benchmark as benchmark  # imported when timing: it pulls in the C++ extension tooling

    def forward() -> None:
        with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
            model(x)

    forward()  # warm-up (cuDNN algorithm choice, allocator)
    timer = benchmark.Timer("forward()", globals={"forward": forward}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def measure_latency(model: nn.Module, dense: nn.Module, input_shape: tuple[int, ...], batches: Sequence[int],
                    *, fold_bn: bool = True, autocast: bool = False, channels_last: bool = False,
                    min_run_time: float = 0.5, rounds: int = 2) -> dict[str, Any]:
    """{"batch_<B>": {"ms", "dense_ms", "speedup"}} for each batch size, interleaved over `rounds` (the last
    round counts), plus the settings; `model` and `dense` are not changed."""
    timed = {"model": inference_form(model, input_shape, fold_bn), "dense": inference_form(dense, input_shape, fold_bn)}
    like = zero_input(timed["model"], input_shape)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        timed = {k: m.to(memory_format=torch.channels_last) for k, m in timed.items()}
    out: dict[str, Any] = {"fold_bn": fold_bn, "autocast": autocast, "channels_last": channels_last,
                           "threads": torch.get_num_threads(), "timer": "torch.utils.benchmark median"}
    for batch in batches:
        x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0)).to(like)
        x = x.contiguous(memory_format=memory)
        seconds: dict[str, float] = {}
        for _ in range(rounds):
            for name in ("dense", "model"):
                seconds[name] = _median_s(timed[name], x, autocast, min_run_time)
        out[f"batch_{batch}"] = {"ms": 1e3 * seconds["model"], "dense_ms": 1e3 * seconds["dense"],
                                 "speedup": seconds["dense"] / seconds["model"]}
    return out
