"""The torch-free runtime: onnxruntime sessions configured from the model's embedded contract.

>>> from fer_export import EmotionClassifier
>>> clf = EmotionClassifier("best_model.onnx", provider="cpu")
>>> probs = clf.predict([face_crop_uint8])          # (N, 7), rows sum to 1
>>> clf.labels[probs[0].argmax()]
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ArtifactError, ProviderError
from .preprocess import normalize, resize_batch, to_gray
from .spec import META_INPUT, META_SPEC, ModelSpec

PROVIDERS = ("auto", "cpu", "cuda")
_ORT = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
DEFAULT_MODEL = Path(__file__).parent / "models" / "fer2013_resnet18.onnx"


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def open_session(path: str | Path, provider: str = "auto", threads: int | None = None):
    """Create an onnxruntime session on the requested provider. Returns ``(session, provider)``.

    ``cuda`` when CUDA is not usable raises :class:`ProviderError`: onnxruntime itself would log an
    error and quietly run on the CPU, which is exactly what a user asking for CUDA must not get.
    ``auto`` takes CUDA when it really works, else the CPU.
    """
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise ProviderError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such model file")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors are raised, not logged
    if threads:
        opts.intra_op_num_threads = threads
    have_cuda = _ORT["cuda"] in ort.get_available_providers()
    if provider == "cuda" and not have_cuda:
        raise ProviderError(
            "CUDA was requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {ort.get_available_providers()}). Install the GPU build in a fresh environment: "
            "pip uninstall onnxruntime && pip install 'fer-export[gpu]', or use --provider cpu"
        )
    wanted = ["cuda", "cpu"] if provider == "cuda" or (provider == "auto" and have_cuda) else ["cpu"]
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=[_ORT[p] for p in wanted])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ArtifactError(f"{path}: onnxruntime cannot load this model: {exc}") from exc
    used = "cuda" if sess.get_providers()[0] == _ORT["cuda"] else "cpu"
    if provider == "cuda" and used != "cuda":
        raise ProviderError(
            "CUDA was requested but onnxruntime could not start it (missing CUDA/cuDNN libraries or no GPU); "
            "use --provider cpu or fix the CUDA install"
        )
    return sess, used


def read_metadata(sess, path: str | Path = "<model>") -> dict[str, str]:
    return dict(sess.get_modelmeta().custom_metadata_map)


def spec_from_metadata(meta: dict[str, str], path: str | Path = "<model>") -> ModelSpec:
    if META_SPEC not in meta:
        raise ArtifactError(
            f"{path}: has no '{META_SPEC}' metadata, so its labels, input size and normalisation are "
            f"unknown. Export it with `fer-export onnx CHECKPOINT`."
        )
    return ModelSpec.from_json(meta[META_SPEC])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class EmotionClassifier:
    """Classify grayscale (or BGR) face crops of any size with an exported ONNX model.

    Everything — labels, input size, normalisation, resize method — comes from the model's
    embedded metadata. ``model=None`` uses the model bundled with the package.
    """

    def __init__(self, model: str | Path | None = None, provider: str = "auto",
                 batch_size: int = 32, threads: int | None = None):
        path = Path(model) if model is not None else DEFAULT_MODEL
        if model is None and not path.is_file():
            raise ArtifactError(
                f"no bundled model in this install ({path} is missing); pass the path of an ONNX model "
                f"exported with `fer-export onnx`"
            )
        self.path = path
        self.session, self.provider = open_session(path, provider, threads)
        self.metadata = read_metadata(self.session, path)
        self.spec = spec_from_metadata(self.metadata, path)
        self.input_format = self.metadata.get(META_INPUT, "normalized")
        self.batch_size = max(1, int(batch_size))
        self._input = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self._output = "probs" if "probs" in outputs else outputs[0]
        self._softmax = self._output != "probs"

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def __repr__(self) -> str:
        return f"EmotionClassifier({str(self.path)!r}, provider={self.provider!r}, labels={self.labels})"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one already-prepared batch (what the graph's input expects); return probabilities."""
        out = self.session.run([self._output], {self._input: batch})[0]
        return softmax(out) if self._softmax else out

    def predict(self, faces: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """uint8 face crops (HxW gray or HxWx3 BGR, any size) -> float32 probabilities (N, classes)."""
        faces = list(faces)  # a list of crops, or an (N, H, W) array of equal-size crops
        if not faces:
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        if self.input_format == "uint8":
            return self._predict_raw(faces)
        chunks = [self.run(normalize(resize_batch(faces[i:i + self.batch_size], self.spec), self.spec))
                  for i in range(0, len(faces), self.batch_size)]
        return np.concatenate(chunks).astype(np.float32)

    def _predict_raw(self, faces: list[np.ndarray]) -> np.ndarray:
        """Models exported with preprocessing inside take uint8 (N, 1, H, W); batch equal sizes."""
        grays = [to_gray(f) for f in faces]
        out = np.zeros((len(grays), self.spec.num_classes), dtype=np.float32)
        for shape in {g.shape for g in grays}:
            idx = [i for i, g in enumerate(grays) if g.shape == shape]
            for j in range(0, len(idx), self.batch_size):
                part = idx[j:j + self.batch_size]
                out[part] = self.run(np.stack([grays[i] for i in part])[:, None])
        return out

