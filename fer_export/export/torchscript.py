"""TorchScript export: the traced, frozen network, returning logits (a drop-in for the eager model).

The saved module is frozen but not ``optimize_for_inference``-d: a module after that pass cannot be
reloaded, so loaders may optimise after loading. Metadata goes into TorchScript extra files under
the same keys as ONNX ``metadata_props``. Every ``torch.jit`` API warns that it is deprecated; the
warnings are silenced here because users can act on none of them.
"""
from __future__ import annotations

from pathlib import Path

from ..spec import ModelSpec
from .artifact import METADATA_KEYS, Artifact, quiet_torch


def export_torchscript(model, spec: ModelSpec, path: Path, metadata: dict[str, str]) -> None:
    """Trace ``model`` at ``spec.input_size`` (any batch), freeze it and save it with ``metadata``."""
    import torch

    example = torch.zeros(2, spec.channels, *spec.input_size)
    with quiet_torch(), torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model.eval(), example, check_trace=False))  # parity checks it
        torch.jit.save(frozen, str(path), _extra_files=metadata)


def _load(path: Path):
    from ..predictors import load_torchscript

    with quiet_torch():
        module, _, metadata = load_torchscript(path, METADATA_KEYS)
    return module, metadata


def stamp_torchscript(path: Path, metadata: dict[str, str]) -> None:
    import torch

    module, _ = _load(path)
    with quiet_torch():
        torch.jit.save(module, str(path), _extra_files=metadata)


def load_torchscript_artifact(path: Path) -> Artifact:
    """Open a TorchScript artifact: its ``logits`` output and its metadata."""
    import torch

    module, metadata = _load(path)

    def run(batch):
        with torch.inference_mode():
            return {"logits": module(torch.from_numpy(batch)).numpy()}

    return Artifact(Path(path), run, metadata)
