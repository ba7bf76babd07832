"""The torch-free runtime: onnxruntime sessions configured from the model's embedded contract.

>>> from fer_export import EmotionClassifier
>>> clf = EmotionClassifier("best_model.onnx", provider="cpu")
>>> probs = clf.predict([face_crop_uint8])          # (N, 7), rows sum to 1
>>> clf.labels[probs[0].argmax()]
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import ArtifactError, InputError, SelfCheckError, SelfCheckWarning, SpecError
from .preprocess import normalize, resize_batch, to_gray
from .sessions import ACCURATE_FP32, BUNDLED_MODELS, DEFAULT_TIER, PROVIDERS, open_session, resolve_model
from .spec import INPUT_NORMALIZED, INPUT_UINT8, META_INPUT, META_SPEC, ModelSpec

#: What this module offers; the model files and sessions themselves come from :mod:`fer_export.sessions`.
__all__ = ["ACCURATE_FP32", "BUNDLED_MODELS", "DEFAULT_BATCH_SIZE", "DEFAULT_TIER", "PROVIDERS", "EmotionClassifier",
           "SelfCheckWarning", "open_session", "read_metadata", "resolve_model", "softmax", "spec_from_metadata"]

#: Crops per onnxruntime call.
DEFAULT_BATCH_SIZE = 32


def read_metadata(sess, path: str | Path = "<model>") -> dict[str, str]:
    return dict(sess.get_modelmeta().custom_metadata_map)


def spec_from_metadata(meta: dict[str, str], path: str | Path = "<model>") -> ModelSpec:
    if META_SPEC not in meta:
        raise ArtifactError(
            f"{path}: has no '{META_SPEC}' metadata, so its labels, input size and normalisation are "
            f"unknown. Export it with `fer-export onnx CHECKPOINT`."
        )
    try:
        return ModelSpec.from_json(meta[META_SPEC])
    except SpecError as exc:
        raise ArtifactError(f"{path}: its embedded '{META_SPEC}' is invalid: {exc}; re-export it with "
                            "`fer-export onnx`") from exc


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed in float64, returned as float32."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _face_list(faces, caller: str = "predict") -> list:
    """``faces`` as a list of crops, or an InputError saying what ``caller`` (``predict``) was given instead."""
    if isinstance(faces, np.ndarray):
        if faces.ndim == 2 or (faces.ndim == 3 and faces.shape[2] in (1, 3, 4)):
            kind = "gray" if faces.ndim == 2 or faces.shape[2] == 1 else "colour"
            raise InputError(f"{caller}() got one {kind} image of shape {faces.shape}; pass a list of faces: "
                             f"{caller}([face])")
        if faces.ndim not in (3, 4):
            raise InputError(f"{caller}() needs a list of face images or an (N, H, W) array of them; got an array "
                             f"of shape {faces.shape}")
        return list(faces)
    if isinstance(faces, Iterable) and not isinstance(faces, (str, bytes, Path, dict)):
        return list(faces)
    what = "None — did cv2.imread fail to read the file?" if faces is None else (
        f"{type(faces).__name__} {faces!r}"[:80] + (" — read the file with cv2.imread first"
                                                    if isinstance(faces, (str, bytes, Path)) else ""))
    raise InputError(f"{caller}() needs a list of face images (uint8 HxW or HxWx3); got {what}")


def _checked_faces(faces, caller: str = "predict") -> list:
    """:func:`_face_list`, each face a non-empty uint8 image (H x W, H x W x 1, 3 or 4), else an InputError."""
    faces = _face_list(faces, caller)
    for i, face in enumerate(faces):
        if not isinstance(face, np.ndarray) or face.dtype != np.uint8 or face.ndim not in (2, 3) or 0 in face.shape \
                or (face.ndim == 3 and face.shape[2] not in (1, 3, 4)):
            what = "None" if face is None else f"{type(face).__name__} {getattr(face, 'dtype', '')} {getattr(face, 'shape', '')}"
            raise InputError(f"face {i} is {what}, not a uint8 image (H x W, or H x W x 1, 3 or 4); cv2.imread returns "
                             "None for a missing or unreadable file: check that path")
    return faces


class EmotionClassifier:
    """Classify grayscale (or BGR) face crops of any size with an exported ONNX model.

    Everything — labels, input size, normalisation, resize method — comes from the model's
    embedded metadata. ``model`` is a file, or the name of a model bundled with the package
    (:data:`BUNDLED_MODELS`: ``"accurate"``, the default, or ``"fast"``; the file for the provider
    that runs it). This is the one
    onnxruntime wrapper of the toolkit: the batch runner and evaluation use it too. ``threads`` and
    ``spin`` go to :func:`open_session`; ``literal=True`` runs the file with graph optimisations off.

    On opening, the model checks itself (:mod:`fer_export.probe`; ``self.check`` says how it went):
    the probe its file carries runs through the session and must give the probabilities the file
    records. When it does not, a bundled model falls back to a correct path (the fp32 file if there
    is one, else the same file run literally) with a :class:`SelfCheckWarning`, and any other file is
    refused with a :class:`~fer_export.errors.SelfCheckError`; ``self_check=False`` skips the check
    (the file then runs as it is).
    """

    format = "onnx"

    def __init__(self, model: str | Path | None = None, provider: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None, spin: bool = True,
                 self_check: bool = True, literal: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        path = resolve_model(model, provider)
        self.session, self.provider = open_session(path, provider, threads, spin, literal)
        if (used := resolve_model(model, self.provider)) != path:  # auto chose CUDA's file, and CUDA did not start
            path = used
            self.session, self.provider = open_session(path, self.provider, threads, spin, literal)
        self._open(path, batch_size, literal)
        self._options = (threads, spin)
        if self_check:
            self._check_or_fall_back(model)
        else:
            from .cpu import describe
            from .probe import UNCHECKED, SelfCheck

            self.check = SelfCheck(str(path), UNCHECKED, describe(), how="skipped")

    def _open(self, path: Path, batch_size: int, literal: bool) -> None:
        """Read the contract of the model ``self.session`` runs (the file at ``path``)."""
        self.path, self.literal = path, literal
        self.metadata = read_metadata(self.session, path)
        self.spec = spec_from_metadata(self.metadata, path)
        self.input_format = self.metadata.get(META_INPUT, INPUT_NORMALIZED)
        self.batch_size = int(batch_size)
        self._input = self.session.get_inputs()[0].name
        batch = self.session.get_inputs()[0].shape[:1]
        #: The graph's fixed batch size (``fer-export onnx --batch N``), or None for a dynamic batch: a fixed
        #: graph is run on chunks of exactly that many rows, the last one padded.
        self.fixed_batch = batch[0] if batch and isinstance(batch[0], int) and batch[0] > 0 else None
        outputs = [o.name for o in self.session.get_outputs()]
        self._probs = "probs" if "probs" in outputs else None
        self._logits = "logits" if "logits" in outputs else outputs[0]
        problems = self._shape_problems()
        if problems:
            raise ArtifactError(f"{path}: the graph does not fit its own metadata: {'; '.join(problems)}; "
                                "re-export it with `fer-export onnx`")

    def _check_or_fall_back(self, model) -> None:
        """The self-check; on a failure, a bundled model's correct path or a SelfCheckError."""
        import warnings

        from .probe import FAILED, self_check

        self.check = self_check(self)
        if self.check.status != FAILED:
            return
        failed = self.check
        if not (isinstance(model, str) and model in BUNDLED_MODELS) and model is not None:
            raise SelfCheckError(f"{failed.line()}: this machine does not compute the file as it was made (an "
                                 "int8 file with full-range weights on a CPU without VNNI, or an altered file); "
                                 "re-export it with fer-export, or pass --no-self-check (self_check=False) to run "
                                 "it anyway")
        fp32 = ACCURATE_FP32 if self.path == BUNDLED_MODELS["accurate"]["cpu"] else None
        threads, spin = self._options
        if fp32 is not None and fp32.is_file():
            self.session, self.provider = open_session(fp32, self.provider, threads, spin)
            self._open(fp32, self.batch_size, False)
            instead = f"the fp32 file {fp32.name}"
        else:
            self.session, self.provider = open_session(self.path, self.provider, threads, spin, literal=True)
            self._open(self.path, self.batch_size, True)
            instead = "the same file with graph optimisations off (slower)"
        self.check = self_check(self)
        if self.check.status == FAILED:
            raise SelfCheckError(f"{failed.line()}; its fallback failed too: {self.check.line()}; reinstall fer-export")
        warnings.warn(f"{failed.line()}; running {instead}", SelfCheckWarning, stacklevel=3)

    def sibling(self, threads: int | None, spin: bool = True) -> "EmotionClassifier":
        """Another session of the model this one runs (after any fallback), on the CPU, not checked again."""
        clf = EmotionClassifier(self.path, "cpu", self.batch_size, threads, spin, self_check=False, literal=self.literal)
        clf.check = self.check
        return clf

    def _shape_problems(self) -> list[str]:
        """Where the graph's declared input and output shapes contradict the embedded spec."""
        spec, problems = self.spec, []
        inputs = self.session.get_inputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4:
            return [f"expected one input of shape (N, C, H, W), found {[(i.name, i.shape) for i in inputs]}"]
        want = (1, None, None) if self.raw else (spec.channels, *spec.input_size)
        for axis, got, expected in zip("CHW", shape[1:], want):
            if isinstance(got, int) and expected is not None and got != expected:
                problems.append(f"input {axis} is {got}, the spec says {expected}")
        for o in self.session.get_outputs():
            if o.name in (self._probs, self._logits) and len(o.shape) == 2 and isinstance(o.shape[1], int) \
                    and o.shape[1] != spec.num_classes:
                problems.append(f"output {o.name!r} has {o.shape[1]} classes, the spec has {spec.num_classes} labels")
        return problems

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def raw(self) -> bool:
        """Whether the graph takes uint8 crops and resizes and normalises inside."""
        return self.input_format == INPUT_UINT8

    def __repr__(self) -> str:
        return f"EmotionClassifier({str(self.path)!r}, provider={self.provider!r}, labels={self.labels})"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for an already-prepared graph input (see :meth:`prepare`), ``batch_size`` rows a call."""
        chunks = [self._probabilities(batch[i:i + self.batch_size]) for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.spec.num_classes), np.float32)

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        out = self._run(self._probs or self._logits, x)
        if not np.isfinite(out).all():
            raise ArtifactError(f"{self.path}: the model gave non-finite outputs (NaN or infinity) for "
                                f"{int((~np.isfinite(out)).any(axis=1).sum())} of {len(x)} faces; its weights or its "
                                "spec's mean/std are broken: re-export it with `fer-export onnx`")
        return out if self._probs else softmax(out)

    def _run(self, output: str, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise InputError(f"the model takes a batch of shape (N, C, H, W) (see prepare()); got "
                             f"{type(x).__name__} {getattr(x, 'shape', '')}")
        n = self.fixed_batch
        if n is None or len(x) == n:
            return self._run_once(output, x)
        if not len(x):
            return np.zeros((0, self.spec.num_classes), np.float32)
        chunks = []
        for i in range(0, len(x), n):  # a fixed-batch graph: chunks of exactly n rows, the last one padded
            part = x[i:i + n]
            pad = np.zeros((n - len(part), *part.shape[1:]), part.dtype)
            chunks.append(self._run_once(output, np.concatenate([part, pad]) if len(pad) else part)[:len(part)])
        return np.concatenate(chunks)

    def _run_once(self, output: str, x: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run([output], {self._input: x})[0]
        except Exception as exc:  # onnxruntime raises its own InvalidArgument/Fail/... types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if type(exc).__name__ == "InvalidArgument":  # the input's type or shape, not the model
                raise InputError(f"the input does not fit {self.path}: a {x.dtype} array of shape {x.shape}: "
                                 f"{first}; pass what prepare() returns") from exc
            raise ArtifactError(f"{self.path}: onnxruntime could not run this model on a {x.shape} input: {first}") from exc
        if out.ndim != 2 or out.shape != (len(x), self.spec.num_classes):
            raise ArtifactError(f"{self.path}: output {output!r} has shape {out.shape} for {len(x)} inputs, but the "
                                f"model's metadata lists {self.spec.num_classes} labels; re-export it with `fer-export onnx`")
        return out

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits for uint8 crops (N, H, W) already resized to ``spec.input_size`` (evaluation's interface)."""
        if not isinstance(batch, np.ndarray) or batch.ndim != 3 or batch.dtype != np.uint8 \
                or (not self.raw and tuple(batch.shape[1:]) != tuple(self.spec.input_size)):
            raise InputError(f"logits() takes uint8 crops (N, H, W) resized to {tuple(self.spec.input_size)}; got "
                             f"{type(batch).__name__} {getattr(batch, 'dtype', '')} {getattr(batch, 'shape', '')}")
        x = batch[:, None] if self.raw else normalize(batch, self.spec)
        return self._run(self._logits, x)

    def prepare(self, faces: Sequence[np.ndarray]):
        """What the graph takes for these crops: float (N, C, H, W), resized and normalised as the spec
        says; for graphs with preprocessing inside, the gray crops themselves (a list, any sizes)."""
        return self._prepare(_checked_faces(faces, "prepare"))

    def _prepare(self, faces: list) -> np.ndarray | list:
        """:meth:`prepare` of faces already checked."""
        if self.raw:
            return [to_gray(f) for f in faces]
        return normalize(resize_batch(faces, self.spec), self.spec)

    def predict(self, faces: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """uint8 face crops (HxW gray or HxWx3 BGR, any size) -> float32 probabilities (N, classes).

        ``faces`` is a list of crops (``predict([face])`` for one), or an (N, H, W) or (N, H, W, 3) array
        of equal-size crops. A single image is refused with an :class:`InputError` rather than guessed
        at: an (H, W) array would otherwise be H one-pixel-high faces, an (H, W, 3) one H faces of W x 3.
        """
        faces = _checked_faces(faces)
        if not faces:
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        if self.raw:
            return self.predict_prepared(self._prepare(faces))
        return np.concatenate([self.run(self._prepare(faces[i:i + self.batch_size]))
                               for i in range(0, len(faces), self.batch_size)]).astype(np.float32)

    def predict_prepared(self, prepared) -> np.ndarray:
        """Probabilities for the output of :meth:`prepare` (or several of them concatenated)."""
        if not self.raw:
            want = (self.spec.channels, *self.spec.input_size)
            if not isinstance(prepared, np.ndarray) or prepared.ndim != 4 or tuple(prepared.shape[1:]) != want \
                    or prepared.dtype != np.float32:
                raise InputError(f"predict_prepared() takes what prepare() returns, float32 (N, {', '.join(map(str, want))}); "
                                 f"got {type(prepared).__name__} {getattr(prepared, 'dtype', '')} "
                                 f"{getattr(prepared, 'shape', '')}")
            return self.run(prepared)
        if isinstance(prepared, np.ndarray) or not all(isinstance(g, np.ndarray) and g.ndim == 2
                                                        and g.dtype == np.uint8 for g in prepared):
            raise InputError("predict_prepared() takes what prepare() returns: for this model a list of uint8 "
                             "gray crops (H, W)")
        out = np.zeros((len(prepared), self.spec.num_classes), dtype=np.float32)
        for shape in {g.shape for g in prepared}:  # the graph takes one crop size per call
            idx = [i for i, g in enumerate(prepared) if g.shape == shape]
            out[idx] = self.run(np.stack([prepared[i] for i in idx])[:, None])
        return out
