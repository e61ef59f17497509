"""Atomic checkpoints that say which file is broken and why.

A checkpoint is a dict saved with `torch.save` to a temp file in the same folder, then
moved into place with `os.replace`: a run killed while saving leaves the previous
checkpoint intact.  Models are stored as state dicts plus their `arch()` description,
never as pickled modules, so loading uses `weights_only=True`.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunelab import layers
from prunelab.errors import UserError, one_line
from prunelab.models import model_from_arch

FORMAT = "prunelab-checkpoint/1"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _KeepWriteError:
    """A binary file whose write errors are kept: torch.save reports them as a RuntimeError without the cause."""

    def __init__(self, file: Any) -> None:
        self.file, self.error = file, None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


def save_atomic(path: Path, payload: dict[str, Any]) -> None:
    """torch.save `payload` (plus a format tag) to `path` atomically.  A write that fails (a read-only folder,
    a full disk) raises an OSError naming `path`, and leaves the previous file and no temp file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: a shared baseline cache must stay readable
        with os.fdopen(fd, "wb") as f:
            sink = _KeepWriteError(f)
            try:
                torch.save({"format": FORMAT, **payload}, sink)
            except RuntimeError:
                if sink.error is None:
                    raise
                raise sink.error from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def load(path: Path, key: str = "baseline.checkpoint", fix: str = "give a .pt file written by prunelab or torch.save"
         ) -> dict[str, Any]:
    """Load a checkpoint written by `save_atomic`, or a bare state dict; `key` names the config key in errors and
    `fix` says what to do about a file that cannot be read."""
    if not path.is_file():
        raise UserError(f"{key}: {path} does not exist: give the path of a .pt file written by prunelab")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before refusing the file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file, unsafe pickle
        raise UserError(f"{key}: {path} cannot be read ({unreadable(err)}); {fix}") from None
    if not isinstance(payload, dict):
        raise UserError(f"{key}: {path} holds a {type(payload).__name__}, not a checkpoint or state dict")
    if payload.get("format") != FORMAT:  # a plain state dict, e.g. from another codebase
        return {"model": payload}
    return payload


def unreadable(err: Exception, limit: int = 200) -> str:
    """Why torch.load refused a file, in whole sentences: the call a crafted pickle would have made (nothing ran),
    never torch's advice to load it with weights_only=False."""
    text = one_line(err)
    call = re.search(r"GLOBAL ([\w.]+)", text)
    if call:
        return f"loading it would call {call.group(1)}, which a checkpoint never does; refused, nothing was run"
    if "Weights only load failed" in text:
        detail = re.search(r"WeightsUnpickler error: (.*?)\.?\s*(?:Check the documentation|$)", text)
        what = detail.group(1) if detail else "an unsupported pickle"
        return f"not a checkpoint of tensors and plain values ({what}); refused, nothing was run"
    if len(text) > limit:  # whole sentences only
        cut = text.rfind(". ", 0, limit)
        text = text[: cut + 1] if cut > 0 else text[: text.rfind(" ", 0, limit)] + " ..."
    return f"{type(err).__name__}: {text or 'empty or truncated file'}"


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path, key: str) -> None:
    """`model.load_state_dict(state)` with one line naming the file and the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = [
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch in", shapes))
            if keys
        ]
        raise UserError(f"{key}: {path} does not fit this model ({'; '.join(parts)}): check model= and dataset=")
    model.load_state_dict(state)


def save_model(path: Path, model: nn.Module, **extra: Any) -> None:
    """The final model: its `arch()` spec, the description of its layers against a fresh model of that
    arch (layers.describe: new layer types, widths surgery changed) and its weights."""
    arch = model.arch() if hasattr(model, "arch") else None
    reference = model_from_arch(arch) if arch is not None else None
    save_atomic(path, {"arch": arch, "layers": layers.describe(model, reference), "model": model.state_dict(), **extra})


def load_model(path: Path, key: str = "model") -> nn.Module:
    """Rebuild a model saved by `save_model` (any arch, compressed or not) and load its weights."""
    return model_from_payload(load(path, key), path, key)


def model_from_payload(payload: dict[str, Any], path: Path, key: str = "model") -> nn.Module:
    """The model of a checkpoint already read with `load` (callers that also need its config read it once)."""
    if payload.get("arch") is None:
        raise UserError(f"{key}: {path} has no model description (arch): it cannot be rebuilt")
    model = layers.rebuild(model_from_arch(payload["arch"]), payload.get("layers", {}))
    load_weights(model, payload["model"], path, key)
    return model
