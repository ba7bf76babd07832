"""One interface over every model format, so evaluation and benchmarks run one code path.

``load_predictor(path)`` returns an object with ``.spec``, ``.format`` and ``.logits(batch)``,
where ``batch`` is uint8 (N, H, W) already resized to ``spec.input_size``. ``.onnx`` files open as
:class:`~fer_export.runtime.EmotionClassifier` and need only onnxruntime; ``.pth`` and ``.pt`` need torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ArtifactError
from .preprocess import normalize
from .spec import META_SPEC, ModelSpec

#: Model file suffixes and the format each one is read as.
MODEL_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "checkpoint", ".ckpt": "checkpoint"}


class TorchPredictor:
    """A torch module (eager checkpoint or TorchScript), run in fp32 or under bf16 autocast."""

    def __init__(self, module, spec: ModelSpec, fmt: str, bf16: bool = False):
        self.module, self.spec, self.format, self.bf16 = module, spec, fmt, bf16

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(normalize(batch, self.spec))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.module(x).float().numpy()


def load_torchscript(path: str | Path, keys: Sequence[str] = (META_SPEC,)):
    """Load a TorchScript artifact. Returns ``(module, spec, metadata)``.

    ``metadata`` holds the extra files named in ``keys`` that the file has (TorchScript can only
    read extra files back by name); the spec comes from the ``META_SPEC`` one.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such TorchScript file")
    extra = dict.fromkeys({META_SPEC, *keys}, "")
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError for non-TorchScript files
        raise ArtifactError(f"{path}: not a readable TorchScript file: {str(exc).splitlines()[0]}") from exc
    metadata = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items() if v}
    if META_SPEC not in metadata:
        raise ArtifactError(f"{path}: has no embedded '{META_SPEC}'; export it with `fer-export torchscript`")
    return module.eval(), ModelSpec.from_json(metadata[META_SPEC]), metadata


def load_predictor(path: str | Path, provider: str = "cpu", bf16: bool = False, self_check: bool = True):
    """Open any supported model file for evaluation: ``.onnx``, ``.pt`` (TorchScript) or ``.pth``, or a
    bundled model by name (its fall-back on a failed self-check included). ``self_check`` goes to
    :class:`~fer_export.runtime.EmotionClassifier`."""
    from .runtime import BUNDLED_MODELS, EmotionClassifier

    if isinstance(path, str) and path in BUNDLED_MODELS:
        return EmotionClassifier(path, provider, self_check=self_check)
    path = Path(path)
    fmt = MODEL_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ArtifactError(f"{path}: unknown model format {path.suffix!r}; expected one of {sorted(MODEL_SUFFIXES)}")
    if fmt == "onnx":
        return EmotionClassifier(path, provider, self_check=self_check)
    if fmt == "torchscript":
        module, spec, _ = load_torchscript(path)
        return TorchPredictor(module, spec, fmt, bf16)
    from .model import load_checkpoint

    model, spec = load_checkpoint(path)
    return TorchPredictor(model, spec, fmt, bf16)
