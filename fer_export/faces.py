"""Face detectors (torch-free): YuNet (``cv2.FaceDetectorYN``) and OpenCV's Haar cascade.

``open_detector("auto" | "yunet" | "haar", ...)`` returns an object with ``.name``, ``.path`` and
``.detect(bgr) -> list[Face]`` (boxes in the pixels of the image passed in). Detectors are safe to
share between threads: each thread gets its own OpenCV object.

The YuNet model file is never shipped or downloaded. It is looked up, in order, at ``--yunet-model``,
``$FER_YUNET_MODEL`` and ``~/.cache/fer-export/face_detection_yunet_2026may.onnx`` (under
``$XDG_CACHE_HOME`` when set).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ArtifactError, DependencyError, InputError
from .preprocess import to_gray

DETECTORS = ("auto", "yunet", "haar", "none")
YUNET_FILE = "face_detection_yunet_2026may.onnx"
YUNET_ENV = "FER_YUNET_MODEL"
#: Long sides (px) an image is downscaled to for detection. YuNet misses very large close-up faces
#: at full resolution and costs ~5x more at 1280 than at 640; add 1280 for crowds of small faces.
DET_SIZES = (640,)
#: A crop extends the detected box by this fraction of its longer side on every side, made square.
CROP_MARGIN = 0.1
NMS_IOU = 0.3


@dataclass(frozen=True)
class Face:
    """A detected face: box in source pixels (x, y = top-left corner) and the detector's score."""

    x: int
    y: int
    w: int
    h: int
    score: float | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h


def yunet_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fer-export" / YUNET_FILE


def find_yunet_model(explicit: str | Path | None = None) -> Path | None:
    """The YuNet model file: ``explicit``, else ``$FER_YUNET_MODEL``, else the cache path; None if absent."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such YuNet model file (--yunet-model)")
        return path
    env = os.environ.get(YUNET_ENV)
    if env:
        if not Path(env).is_file():
            raise ArtifactError(f"{env}: no such YuNet model file (${YUNET_ENV})")
        return Path(env)
    cached = yunet_cache_path()
    return cached if cached.is_file() else None


def _yunet_missing() -> str:
    return (f"YuNet needs its model file {YUNET_FILE} (OpenCV zoo, models/face_detection_yunet), which "
            f"fer-export does not ship. Pass --yunet-model PATH, set ${YUNET_ENV}, or copy it to "
            f"{yunet_cache_path()}; or use --detector haar")


def scaled(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """``image`` downscaled so its long side is at most ``long_side``, and the scale applied."""
    h, w = image.shape[:2]
    s = min(1.0, long_side / max(h, w))
    if s == 1.0:
        return image, 1.0
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


class _Detector:
    """Shared logic: multi-scale detection, boxes mapped back to source pixels, NMS, size filter."""

    name = ""
    path: Path | None = None

    def __init__(self, sizes=DET_SIZES, min_face: int = 0):
        self.sizes = tuple(sorted(set(int(s) for s in sizes)))
        self.min_face = int(min_face)
        self._local = threading.local()

    def detect(self, image: np.ndarray) -> list[Face]:
        boxes, scores = [], []
        for size in self.sizes:
            small, s = scaled(image, size)
            for (x, y, w, h), score in self._detect(small):
                boxes.append([x / s, y / s, w / s, h / s])
                scores.append(score)
            if s == 1.0:  # larger sizes would see the same pixels
                break
        faces = [_clip(b, sc, image.shape) for b, sc in zip(boxes, scores)]
        faces = [f for f in faces if f is not None and min(f.w, f.h) >= self.min_face]
        if len(self.sizes) > 1 and len(faces) > 1:
            keep = cv2.dnn.NMSBoxes([list(f.box) for f in faces], [f.score or 1.0 for f in faces], 0.0, NMS_IOU)
            faces = [faces[i] for i in sorted(np.asarray(keep).ravel().tolist())]
        return sorted(faces, key=lambda f: (f.x, f.y))

    def _detect(self, image: np.ndarray) -> list[tuple[tuple[float, ...], float | None]]:
        raise NotImplementedError


class YuNetDetector(_Detector):
    name = "yunet"

    def __init__(self, model: str | Path, threshold: float = 0.7, **kw):
        super().__init__(**kw)
        self.path, self.threshold = Path(model), float(threshold)
        self._net()  # fail now, not in a worker thread

    def _net(self):
        net = getattr(self._local, "net", None)
        if net is None:
            try:
                net = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320), self.threshold, NMS_IOU, 5000)
            except cv2.error as exc:
                raise ArtifactError(f"{self.path}: OpenCV cannot load this YuNet model: {exc}") from exc
            self._local.net = net
        return net

    def _detect(self, image):
        net = self._net()
        net.setInputSize((image.shape[1], image.shape[0]))
        _, found = net.detect(image)
        return [] if found is None else [(tuple(r[:4]), float(r[14])) for r in found]


class HaarDetector(_Detector):
    """OpenCV 4.x's frontal-face Haar cascade (scaleFactor 1.1, minNeighbors 5, minSize 30)."""

    name = "haar"

    def __init__(self, **kw):
        super().__init__(**kw)
        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise DependencyError(
                f"OpenCV {cv2.__version__} has no Haar cascades (removed in OpenCV 5): "
                "pip install 'opencv-python-headless<5', or use --detector yunet")
        self.path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        if not self.path.is_file():
            raise DependencyError(f"{self.path}: Haar cascade file missing from this OpenCV install; "
                                  "reinstall opencv-python-headless<5 or use --detector yunet")
        self._cascade()

    def _cascade(self):
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = cv2.CascadeClassifier(str(self.path))
        return cascade

    def _detect(self, image):
        found = self._cascade().detectMultiScale(to_gray(image), scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        return [(tuple(b), None) for b in found]


def open_detector(name: str = "auto", yunet_model: str | Path | None = None, threshold: float = 0.7,
                  sizes=DET_SIZES, min_face: int = 0):
    """The detector ``name`` asks for; ``auto`` is YuNet when its model file is found, else Haar.

    ``none`` returns None (every image is classified whole).
    """
    if name not in DETECTORS:
        raise InputError(f"detector must be one of {DETECTORS}, got {name!r}")
    if name == "none":
        return None
    path = find_yunet_model(yunet_model)
    if name == "yunet" and path is None:
        raise ArtifactError(_yunet_missing())
    if path is not None and name in ("auto", "yunet"):
        return YuNetDetector(path, threshold, sizes=sizes, min_face=min_face)
    return HaarDetector(sizes=sizes, min_face=min_face)


def _clip(box, score, shape) -> Face | None:
    x, y, w, h = box
    H, W = shape[:2]
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(W, int(round(x + w))), min(H, int(round(y + h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return Face(x0, y0, x1 - x0, y1 - y0, None if score is None else round(float(score), 4))


def crop_face(image: np.ndarray, face: Face, margin: float = CROP_MARGIN) -> np.ndarray:
    """The face as a uint8 gray crop: a square around the box, ``margin`` added, clipped to the image."""
    side = max(face.w, face.h) * (1 + 2 * margin)
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    H, W = image.shape[:2]
    x0, y0 = max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2)))
    x1, y1 = min(W, int(round(cx + side / 2))), min(H, int(round(cy + side / 2)))
    return to_gray(image[y0:y1, x0:x1])
