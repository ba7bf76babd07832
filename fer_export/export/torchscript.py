"""TorchScript export: the traced, frozen network, returning logits (a drop-in for the eager model).

The saved module is frozen but not ``optimize_for_inference``-d: a module after that pass cannot be
reloaded, so loaders may optimise after loading. Metadata goes into TorchScript extra files under
the same keys as ONNX ``metadata_props``. Every ``torch.jit`` API warns that it is deprecated; the
warnings are silenced here because users can act on none of them.
"""
from __future__ import annotations

import io
from pathlib import Path

from ..spec import ModelSpec
from .artifact import METADATA_KEYS, Artifact, quiet_torch


def _save(module, path: Path, metadata: dict[str, str]) -> None:
    """``torch.jit.save`` to memory, then an ordinary write: on a full disk torch's own writer aborts the
    process (or raises a RuntimeError), where Python's raises an ``OSError`` the caller can report."""
    import torch

    buffer = io.BytesIO()
    with quiet_torch():
        torch.jit.save(module, buffer, _extra_files=metadata)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


def export_torchscript(model, spec: ModelSpec, path: Path, metadata: dict[str, str]) -> None:
    """Trace ``model`` at ``spec.input_size`` (any batch), freeze it and save it with ``metadata``."""
    import torch

    example = torch.zeros(2, spec.channels, *spec.input_size)
    with quiet_torch(), torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model.eval(), example, check_trace=False))  # parity checks it
    _save(frozen, path, metadata)


def _load(path: Path):
    from ..predictors import load_torchscript

    with quiet_torch():
        module, _, metadata = load_torchscript(path, METADATA_KEYS)
    return module, metadata


def stamp_torchscript(path: Path, metadata: dict[str, str]) -> None:
    module, _ = _load(path)
    _save(module, path, metadata)


def load_torchscript_artifact(path: Path) -> Artifact:
    """Open a TorchScript artifact: its ``logits`` output and its metadata."""
    import torch

    module, metadata = _load(path)

    def run(batch):
        with torch.inference_mode():
            return {"logits": module(torch.from_numpy(batch)).numpy()}

    return Artifact(Path(path), run, metadata)
