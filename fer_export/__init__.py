"""fer-export: facial-emotion recognition from PyTorch training to verified deployment.

Importing this package never imports torch: the runtime (:class:`EmotionClassifier`) needs only
onnxruntime, numpy, OpenCV and Pillow.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import FerExportError
from .spec import FER2013_LABELS, SEED_SPEC, ModelSpec

__all__ = ["EmotionClassifier", "FER2013_LABELS", "FerExportError", "ModelSpec", "SEED_SPEC", "__version__"]


def __getattr__(name):  # lazy: keep `import fer_export` cheap
    if name == "EmotionClassifier":
        from .runtime import EmotionClassifier

        return EmotionClassifier
    raise AttributeError(f"module 'fer_export' has no attribute {name!r}")
