"""Top-1 accuracy on a loader, summed on the device and reduced over ranks once."""

from __future__ import annotations

import torch
from torch import nn

from prunelab.data.base import Loader
from prunelab.models.features import eval_mode
from prunelab.train.distributed import all_reduce_sum


@torch.no_grad()
def top1(
    model: nn.Module,
    loader: Loader,
    device: torch.device,
    *,
    autocast: bool = False,
    channels_last: bool = False,
    limit_batches: int | None = None,
) -> float:
    """Percent of samples whose arg-max logit is the label (eval mode; every module's own mode restored)."""
    counts = torch.zeros(2, dtype=torch.float64, device=device)  # correct, seen
    with eval_mode(model):
        for i, (images, labels) in enumerate(loader):
            if limit_batches is not None and i >= limit_batches:
                break
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                logits = model(images)
            counts[0] += (logits.argmax(1) == labels).sum()
            counts[1] += labels.numel()
    correct, seen = all_reduce_sum(counts).tolist()
    return 100.0 * correct / max(seen, 1.0)
