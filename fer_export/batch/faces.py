"""Face detectors (torch-free): YuNet (``cv2.FaceDetectorYN``) and OpenCV's Haar cascade.

``open_detector(work_config, framing)`` returns an object with ``.name``, ``.path``,
``.detect(bgr) -> list[Face]`` (boxes, and YuNet's landmarks, in the pixels of the image passed in)
and ``.crop(image, face)`` (the face framed as the model's training crops were, see
:func:`frame_face`; ``.crops(image, face, still)`` adds a picture's wider and tighter views), or None
for ``detector="none"``. Detectors are safe to share between threads:
each thread gets its own OpenCV object.

YuNet's model file (OpenCV zoo, MIT licence, 230 KB) ships with the package, so ``auto`` and ``yunet``
work on a fresh install; nothing is ever downloaded. The file used is, in order: ``--yunet-model``,
``$FER_YUNET_MODEL``, ``~/.cache/fer-export/face_detection_yunet_2026may.onnx`` (under
``$XDG_CACHE_HOME`` when set), the bundled file. Any YuNet file ``cv2.FaceDetectorYN`` loads will do.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ArtifactError, DependencyError
from ..preprocess import to_gray
from ..spec import Framing
from .config import DET_SIZES, WorkConfig

YUNET_FILE = "face_detection_yunet_2026may.onnx"
YUNET_ENV = "FER_YUNET_MODEL"
#: The YuNet file shipped in the package (licence: LICENSE-yunet.txt beside it).
BUNDLED_YUNET = Path(__file__).resolve().parents[1] / "models" / YUNET_FILE
#: A crop extends the detected box by this fraction of its longer side on every side, made square
#: (for models whose spec has no framing).
CROP_MARGIN = 0.1
#: Smallest and largest side (px) of a framed crop; it is cut at the face's own resolution within these.
FRAMED_SIDES = (16, 1024)
NMS_IOU = 0.3


@dataclass(frozen=True)
class Face:
    """A detected face: box in source pixels (x, y = top-left corner), the detector's score and, from
    YuNet, its five landmarks (x, y each, source pixels, in :data:`~fer_export.spec.LANDMARKS` order)."""

    x: int
    y: int
    w: int
    h: int
    score: float | None = None
    landmarks: tuple[float, ...] | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h


def yunet_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fer-export" / YUNET_FILE


def find_yunet_model(explicit: str | Path | None = None) -> Path | None:
    """The YuNet model file: ``explicit``, else ``$FER_YUNET_MODEL``, else the user cache file, else the
    bundled one; None only in an install that lost its bundled file."""
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
    for path in (yunet_cache_path(), BUNDLED_YUNET):
        if path.is_file():
            return path
    return None


def _yunet_missing() -> str:
    return (f"YuNet's model file is missing from this install ({BUNDLED_YUNET}); reinstall fer-export, or "
            f"pass --yunet-model PATH, set ${YUNET_ENV} or copy {YUNET_FILE} (OpenCV zoo, "
            f"models/face_detection_yunet) to {yunet_cache_path()}; or use --detector haar")


def scaled(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """``image`` downscaled so its long side is at most ``long_side``, and the scale applied."""
    s = min(1.0, long_side / max(image.shape[:2]))
    return resized(image, s), s


def resized(image: np.ndarray, s: float) -> np.ndarray:
    """``image`` scaled by ``s`` (area-averaged down, bilinear up; itself at 1)."""
    if s == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)


#: In-plane turns (degrees) of YuNet's last looks at a picture: it misses faces tilted far from upright
#: (a head on a pillow or a shoulder, a face turned sideways in the frame).
TURNS = (-30.0, 30.0)


def second_looks(look_again: float, detector: str = "yunet") -> list[tuple[float, bool, float]]:
    """``(scale, mirrored, turn)`` of each look, in order, at a picture in which ``detector`` found
    nothing, as multiples of the first look's scale: ``look_again`` times, then (YuNet) halfway between
    1x and that, each as it is and mirrored, then (YuNet) turned by each of TURNS degrees at 1x and
    halfway; none when ``look_again`` is 1. Haar gets the enlarged look only: it has no score to
    threshold, and its other looks added false faces in face-free pictures. What each look finds and
    costs: benchmarks/README.md, "pictures.py" and "Turned looks"."""
    if look_again <= 1.0:
        return []
    if detector == "haar":
        return [(look_again, False, 0.0)]
    halfway = (1 + look_again) / 2
    return ([(m, mirrored, 0.0) for m in (look_again, halfway) for mirrored in (False, True)]
            + [(m, False, turn) for m in (1.0, halfway) for turn in TURNS])


def turned(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` turned ``degrees`` counter-clockwise about its centre on a canvas that holds all of it
    (edge pixels repeated around it), and the 2x3 map from the turned canvas's pixels back to the image's."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    size = (int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin)))
    m[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2
    return cv2.warpAffine(image, m, size, borderMode=cv2.BORDER_REPLICATE), cv2.invertAffineTransform(m)


class _Detector:
    """Shared logic: multi-scale detection, boxes mapped back to source pixels, NMS, size filter,
    and the ``max_faces`` largest faces kept (in the usual left-to-right order)."""

    name = ""
    path: Path | None = None

    def __init__(self, sizes=DET_SIZES, min_face: int = 0, max_faces: int | None = None,
                 framing: Framing | None = None, look_again: float = 1.0, crop_spread: float = 0.0):
        self.sizes = tuple(sorted(set(int(s) for s in sizes)))
        self.look_again = float(look_again)  # see detect()
        self.min_face = int(min_face)
        self.max_faces = max_faces
        self.framing = framing  # how crop() frames a face; None = crop_face's square around the box
        #: the side of each view crops() gives of a face in a picture, as multiples of the framed side
        self.views = (1.0,) if framing is None or not crop_spread else (1.0, 1.0 - crop_spread, 1.0 + crop_spread)
        self._local = threading.local()

    def detect(self, image: np.ndarray, still: bool = False) -> list[Face]:
        """The faces in ``image``, found at each of ``sizes`` (the long side it is scaled down to). A
        ``still`` picture (not a video frame) in which no face is found gets a second look
        (:meth:`second_looks`): a face too small or too blurred for the first scale is often found
        once enlarged, or mirrored (the detector is not exactly symmetric). Video frames are not
        searched again: a frame without a face is the common case there, and the second look costs
        about 12x the first (look_again 2)."""
        faces, s = self._detect_at_sizes(image)
        if still and not faces:
            small, at = None, None
            for scale, mirrored, turn in self.second_looks(s):  # the first look that finds a face is kept
                if scale != at:  # a scale's mirrored and turned looks reuse its resized copy
                    small, at = resized(image, scale), scale
                looked, back = turned(small, turn) if turn else (small, None)
                faces = self._found(looked, scale, image.shape, mirrored, back)
                if faces:
                    break
        if len(self.sizes) > 1 and len(faces) > 1:
            keep = cv2.dnn.NMSBoxes([list(f.box) for f in faces], [f.score or 1.0 for f in faces], 0.0, NMS_IOU)
            faces = [faces[i] for i in sorted(np.asarray(keep).ravel().tolist())]
        if self.max_faces is not None and len(faces) > self.max_faces:
            faces = sorted(faces, key=lambda f: f.w * f.h, reverse=True)[:self.max_faces]
        return sorted(faces, key=lambda f: (f.x, f.y))

    def second_looks(self, s: float) -> list[tuple[float, bool, float]]:
        """:func:`second_looks` at a picture in which nothing was found at scale ``s``."""
        return [(s * m, mirrored, turn) for m, mirrored, turn in second_looks(self.look_again, self.name)]

    def _detect_at_sizes(self, image: np.ndarray) -> tuple[list[Face], float]:
        """The faces found at each of ``sizes`` (unmerged), and the largest scale used."""
        faces, s = [], 1.0
        for size in self.sizes:
            small, s = scaled(image, size)
            faces += self._found(small, s, image.shape)
            if s == 1.0:  # larger sizes would see the same pixels
                break
        return faces, s

    def _found(self, small: np.ndarray, s: float, shape, mirrored: bool = False,
               back: np.ndarray | None = None) -> list[Face]:
        """The faces ``_detect`` finds in ``small`` (``image`` scaled by ``s``; ``mirrored``: searched
        flipped left to right; ``back``: a turned copy, with :func:`turned`'s map back), in ``image``'s
        pixels. A face found turned keeps its box's size, upright, about its centre mapped back."""
        faces, width = [], small.shape[1]
        for (x, y, w, h), score, points in self._detect(small[:, ::-1].copy() if mirrored else small):
            if mirrored:
                x = width - x - w
                points = None if points is None else _mirror_landmarks(points, width)
            if back is not None:
                x, y = back @ (x + w / 2, y + h / 2, 1.0) - (w / 2, h / 2)
                if points is not None:
                    xy = np.reshape(np.asarray(points, np.float64), (-1, 2))
                    points = tuple((xy @ back[:, :2].T + back[:, 2]).ravel().tolist())
            marks = None if points is None else tuple(round(float(v) / s, 2) for v in points)
            face = _clip([x / s, y / s, w / s, h / s], score, shape, marks)
            if face is not None and min(face.w, face.h) >= self.min_face:
                faces.append(face)
        return faces

    def crop(self, image: np.ndarray, face: Face, scale: float = 1.0) -> np.ndarray:
        """``face`` of ``image`` as a gray crop, framed as this detector was set up to (:func:`frame_face`)."""
        return frame_face(image, face, self.framing, self.name, scale)

    def crops(self, image: np.ndarray, face: Face, still: bool = False) -> list[np.ndarray]:
        """The crops of ``face`` the model classifies: its framed crop; for a ``still`` picture with
        a framing, also its views one crop spread wider and tighter (``views``), whose probabilities
        are averaged (:func:`~.work.per_face`). A training crop's framing varies about the detector's
        box, which no rule predicts from the box (FER2013's: by 22 % of its side about YuNet's); the
        average over the views stands for that spread."""
        return [self.crop(image, face, v) for v in (self.views if still else (1.0,))]

    def _detect(self, image: np.ndarray) -> list[tuple[tuple[float, ...], float | None, tuple | None]]:
        """``(box, score, landmarks)`` of each face in ``image``'s pixels; score and landmarks may be None."""
        raise NotImplementedError


class YuNetDetector(_Detector):
    """YuNet through onnxruntime (one session shared by the threads, one intra-op thread each: the
    workers are the parallelism), decoded exactly as ``cv2.FaceDetectorYN`` decodes it; about twice
    as fast as OpenCV's DNN module here (``benchmarks/detectors.py``). A YuNet file without the
    2023+ outputs (``cls_8`` ... ``kps_32``), e.g. the 2022mar one, runs through
    ``cv2.FaceDetectorYN`` instead (``backend``: ``auto`` | ``onnxruntime`` | ``opencv``)."""

    name = "yunet"

    def __init__(self, model: str | Path, threshold: float, backend: str = "auto", **kw):
        super().__init__(**kw)
        self.path, self.threshold = Path(model), float(threshold)
        self._session = None if backend == "opencv" else _yunet_session(self.path, required=backend == "onnxruntime")
        self.backend = "onnxruntime" if self._session is not None else "opencv"
        self._input = self._session and self._session.get_inputs()[0].name
        if self._session is None:  # fail now, not in a worker thread: OpenCV loads files it cannot run
            try:
                self._detect(np.zeros((32, 32, 3), np.uint8))
            except cv2.error as exc:
                raise ArtifactError(f"{self.path}: OpenCV cannot run this YuNet model: {exc}") from exc

    def _net(self):
        net = getattr(self._local, "net", None)
        if net is None:
            try:
                net = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320), self.threshold, NMS_IOU, YUNET_TOP_K)
            except cv2.error as exc:
                raise ArtifactError(f"{self.path}: OpenCV cannot load this YuNet model: {exc}") from exc
            self._local.net = net
        return net

    def _detect(self, image):
        if self._session is not None:
            return _yunet_decode(self._session, self._input, image, self.threshold)
        net = self._net()
        net.setInputSize((image.shape[1], image.shape[0]))
        _, found = net.detect(image)
        return [] if found is None else [(tuple(r[:4]), float(r[14]), tuple(r[4:14])) for r in found]


YUNET_STRIDES = (8, 16, 32)
YUNET_OUTPUTS = tuple(f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in YUNET_STRIDES)
YUNET_TOP_K = 5000


def _yunet_session(path: Path, required: bool = False):
    """An onnxruntime session of the YuNet file at ``path`` if it has the 2023+ outputs; else None
    (or, ``required``, an :class:`ArtifactError`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        if required:
            raise ArtifactError(f"{path}: onnxruntime cannot load this YuNet model: {exc}") from exc
        return None
    if set(YUNET_OUTPUTS) <= {o.name for o in session.get_outputs()} and len(session.get_inputs()) == 1:
        return session
    if required:
        raise ArtifactError(f"{path}: not a YuNet model with outputs {', '.join(YUNET_OUTPUTS)}; use --detector haar "
                            "or another YuNet file")
    return None


def _yunet_decode(session, input_name: str, image: np.ndarray, threshold: float) -> list[tuple]:
    """YuNet's faces in a BGR ``image``: the image zero-padded to multiples of 32, each stride's grid
    decoded (score = sqrt(cls * obj), box centre and landmarks as grid offsets, sides as exp), then
    OpenCV's NMS: what ``cv2.FaceDetectorYN.detect`` returns, as ``(box, score, landmarks)``."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :h, :w] = image.transpose(2, 0, 1)
    out = dict(zip(YUNET_OUTPUTS, session.run(list(YUNET_OUTPUTS), {input_name: blob})))
    boxes, scores, marks = [], [], []
    for stride in YUNET_STRIDES:
        score = np.sqrt(np.clip(out[f"cls_{stride}"].reshape(-1), 0, 1) * np.clip(out[f"obj_{stride}"].reshape(-1), 0, 1))
        idx = np.flatnonzero(score >= threshold)
        if not idx.size:
            continue
        row, col = np.divmod(idx, pw // stride)
        b = out[f"bbox_{stride}"].reshape(-1, 4)[idx]
        side_w, side_h = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
        x, y = (col + b[:, 0]) * stride - side_w / 2, (row + b[:, 1]) * stride - side_h / 2
        k = out[f"kps_{stride}"].reshape(-1, 10)[idx].astype(np.float64)
        k[:, 0::2] = (k[:, 0::2] + col[:, None]) * stride
        k[:, 1::2] = (k[:, 1::2] + row[:, None]) * stride
        boxes += np.stack([x, y, side_w, side_h], 1).tolist()
        scores += score[idx].tolist()
        marks += k.tolist()
    if not boxes:
        return []
    keep = np.asarray(cv2.dnn.NMSBoxes(boxes, scores, threshold, NMS_IOU, top_k=YUNET_TOP_K)).ravel()
    return [(tuple(boxes[i]), float(scores[i]), tuple(marks[i])) for i in keep]


#: The Haar cascade's smallest face, px at detection scale (as the ``fer`` package's 50). Each smaller
#: size adds pyramid levels at nearly full resolution, the costliest ones: 30 px took 1.4x the time per
#: frame. Smaller faces: a larger --det-size, or YuNet.
HAAR_MIN_SIZE = 48


class HaarDetector(_Detector):
    """OpenCV 4.x's frontal-face Haar cascade (scaleFactor 1.1, minNeighbors 5, minSize HAAR_MIN_SIZE)."""

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
        found = self._cascade().detectMultiScale(to_gray(image), scaleFactor=1.1, minNeighbors=5,
                                                 minSize=(HAAR_MIN_SIZE, HAAR_MIN_SIZE))
        return [(tuple(b), None, None) for b in found]


def open_detector(config: WorkConfig = WorkConfig(), framing: Framing | None = None):
    """The detector ``config.detector`` asks for, set up as ``config`` says; ``auto`` is YuNet (its file
    is bundled), Haar only in an install without it. ``none`` returns None (every image is classified whole).
    Its crops follow ``framing`` (the model's) unless ``config.crop`` is ``box``."""
    if config.detector == "none":
        return None
    kw = dict(sizes=config.det_sizes, min_face=config.min_face, max_faces=config.max_faces, look_again=config.look_again,
              framing=None if config.crop == "box" else framing, crop_spread=config.crop_spread)
    path = find_yunet_model(config.yunet_model)
    if config.detector == "yunet" and path is None:
        raise ArtifactError(_yunet_missing())
    if path is not None and config.detector in ("auto", "yunet"):
        return YuNetDetector(path, config.det_threshold, **kw)
    return HaarDetector(**kw)


#: Where each of LANDMARKS lands in a mirrored image: the right eye becomes the left one, and so on.
MIRRORED_LANDMARKS = (1, 0, 2, 4, 3)


def _mirror_landmarks(points, width: float) -> tuple[float, ...]:
    """Landmarks found in an image flipped left to right (``width`` px wide), in the unflipped image."""
    xy = np.reshape(np.asarray(points, np.float64), (-1, 2))[list(MIRRORED_LANDMARKS)]
    xy[:, 0] = width - xy[:, 0]
    return tuple(xy.ravel().tolist())


def _clip(box, score, shape, landmarks=None) -> Face | None:
    x, y, w, h = box
    H, W = shape[:2]
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(W, int(round(x + w))), min(H, int(round(y + h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return Face(x0, y0, x1 - x0, y1 - y0, None if score is None else round(float(score), 4), landmarks)


def crop_face(image: np.ndarray, face: Face, margin: float = CROP_MARGIN) -> np.ndarray:
    """The face as a uint8 gray crop: a square around the box, ``margin`` added, clipped to the image."""
    side = max(face.w, face.h) * (1 + 2 * margin)
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    H, W = image.shape[:2]
    x0, y0 = max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2)))
    x1, y1 = min(W, int(round(cx + side / 2))), min(H, int(round(cy + side / 2)))
    return to_gray(image[y0:y1, x0:x1])


def frame_face(image: np.ndarray, face: Face, framing: Framing | None, detector: str | None = None,
               scale: float = 1.0) -> np.ndarray:
    """The face as a uint8 gray crop framed as the model's training crops were: without a framing,
    :func:`crop_face`; with one, the square that the framing's box rule for ``detector`` places around
    the face's box, else (no rule for it) a square warped by the similarity that takes the face's
    landmarks nearest to the framing's, else (no landmarks) the square ``framing.box`` places around
    the box; at the face's own resolution (area-averaged down to ``framing.size`` when it has one),
    the image's edge pixels repeated where the square leaves it. ``scale`` multiplies the square's
    side about its centre (a framed face's wider or tighter view)."""
    if framing is None:
        return crop_face(image, face)
    rule = framing.box_rule(detector)
    if rule is None and face.landmarks is not None:
        unit = similarity(np.reshape(face.landmarks, (-1, 2)), np.reshape(framing.landmarks, (-1, 2)))
        if scale != 1.0:  # the same centre, a side `scale` times as long
            unit = np.hstack([unit[:, :2] / scale, (unit[:, 2:] - 0.5) / scale + 0.5])
    else:
        dx, dy, rule_scale = rule or framing.box
        side = rule_scale * scale * max(face.w, face.h)
        x0 = face.x + face.w / 2 + dx * max(face.w, face.h) - side / 2
        y0 = face.y + face.h / 2 + dy * max(face.w, face.h) - side / 2
        unit = np.array([[1 / side, 0, -x0 / side], [0, 1 / side, -y0 / side]])
    side = int(np.clip(round(1 / np.hypot(*unit[:, 0])), *FRAMED_SIDES))  # source px per crop side
    crop = cv2.warpAffine(to_gray(image), unit * side, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    if framing.size is not None and side > framing.size:  # as sharp as the training crops, not sharper
        crop = cv2.resize(crop, (framing.size, framing.size), interpolation=cv2.INTER_AREA)
    return crop


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation that takes points ``src`` (N, 2) nearest to
    ``dst`` in the least-squares sense (Umeyama 1991; deterministic, unlike RANSAC fits)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ flip @ vt
    scale = np.trace(np.diag(sig) @ flip) / max((s ** 2).sum() / len(src), 1e-12)
    return np.hstack([scale * rot, (md - scale * rot @ ms)[:, None]])
