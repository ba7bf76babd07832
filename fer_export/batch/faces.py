"""Face detectors (torch-free): YuNet (on onnxruntime, :mod:`.yunet`, or ``cv2.FaceDetectorYN``) and
OpenCV's Haar cascade.

``open_detector(detection, framing, crops)`` takes the run's detection settings (and, for cutting
faces out, the model's framing and the crop settings) and returns an object with ``.name``,
``.path``, ``.detect(bgr, still) -> list[Face]`` (boxes, and YuNet's landmarks, in the pixels of the
image passed in) and ``.framer`` (:class:`~.crops.Framer`: the faces' crops, framed as the model's
training crops were, and a picture's views), or None for ``detector="none"``. Detectors are safe to
share between threads: each thread gets its own OpenCV object.

YuNet's model file (OpenCV zoo, MIT licence, 230 KB) ships with the package, so ``auto`` and ``yunet``
work on a fresh install; nothing is ever downloaded. The file used is, in order: ``--yunet-model``,
``$FER_YUNET_MODEL``, ``~/.cache/fer-export/face_detection_yunet_2026may.onnx`` (under
``$XDG_CACHE_HOME`` when set), the bundled file. Any YuNet file ``cv2.FaceDetectorYN`` loads will do.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np

from ..errors import ArtifactError, DependencyError, InputError
from ..preprocess import to_gray
from ..spec import Framing
from .crops import Face, Framer
from .settings import DET_NMS, FULL_DETECT_EVERY, CropSettings, DetectionSettings
from .yunet import YUNET_TOP_K, yunet_decode, yunet_session

YUNET_FILE = "face_detection_yunet_2026may.onnx"
YUNET_ENV = "FER_YUNET_MODEL"
#: The YuNet file shipped in the package (licence: LICENSE-yunet.txt beside it).
BUNDLED_YUNET = Path(__file__).resolve().parents[1] / "models" / YUNET_FILE
#: The settings of a detector made directly (not by :func:`open_detector`): every face kept, one look.
BARE = DetectionSettings(min_face=0, look_again=1.0)


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
    """Shared logic: multi-scale detection, boxes mapped back to source pixels, overlapping boxes
    merged, size filter, and the ``max_faces`` largest faces kept (in the usual left-to-right order),
    all as ``settings`` says; ``framer`` cuts the faces out (default: :func:`~.crops.crop_face`'s square)."""

    name = ""
    path: Path | None = None

    def __init__(self, settings: DetectionSettings = BARE, framer: Framer | None = None):
        self.settings = settings
        self.sizes = tuple(sorted(set(settings.det_sizes)))
        self.framer = framer or Framer(detector=self.name)
        self._local = threading.local()

    def detect(self, image: np.ndarray, still: bool = False) -> list[Face]:
        """The faces in ``image``, found at each of ``sizes`` (the long side it is scaled down to). A
        ``still`` picture (not a video frame) in which no face is found gets a second look
        (:meth:`second_looks`): a face too small or too blurred for the first scale is often found
        once enlarged, or mirrored (the detector is not exactly symmetric). Video frames are not
        searched again: a frame without a face is the common case there, and the second looks cost
        many times the first (how much: benchmarks/README.md, "pictures.py")."""
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
        if len(self.sizes) > 1 and len(faces) > 1:  # one face found at several sizes
            faces = self.merged(faces)
        most = self.settings.max_faces
        if most is not None and len(faces) > most:
            faces = sorted(faces, key=lambda f: f.w * f.h, reverse=True)[:most]
        return sorted(faces, key=lambda f: (f.x, f.y))

    def merged(self, faces: list[Face]) -> list[Face]:
        """``faces`` without those that overlap a higher scored one by more than ``det_nms`` (IoU)."""
        keep = cv2.dnn.NMSBoxes([list(f.box) for f in faces], [f.score or 1.0 for f in faces], 0.0,
                                self.settings.det_nms)
        return [faces[i] for i in sorted(np.asarray(keep).ravel().tolist())]

    def full_scale(self, image: np.ndarray) -> float:
        """The largest scale :meth:`detect` looks at ``image`` at."""
        return min(1.0, max(self.sizes) / max(image.shape[:2]))

    def detect_in(self, small: np.ndarray, window: tuple[int, int, int, int], s: float, shape) -> list[Face]:
        """The faces found in ``window`` (x0, y0, x1, y1, in ``small``'s pixels) of ``small``, a frame of
        ``shape`` scaled by ``s`` (a video's face followed around its last box: :mod:`.follow`), in the
        frame's pixels; unmerged, all kept. Cut from the frame scaled as :meth:`detect` scales it, the
        window holds the very pixels the whole-frame search sees there."""
        x0, y0, x1, y1 = window
        return self._found(small[y0:y1, x0:x1], s, shape, at=(x0, y0))

    def recorded(self) -> dict:
        """The settings that change what this detector finds and crops, as a run's journal records them
        (:func:`~.commit.run_settings`); a run resumed with others is refused."""
        d = self.settings
        looks = [f"{m:g}x{' mirrored' * mirrored}{f' turned {turn:g}' if turn else ''}"
                 for m, mirrored, turn in second_looks(d.look_again, self.name)]
        found = {"det_sizes": list(d.det_sizes), "look_again": d.look_again, "second_looks": looks,
                 "min_face": d.min_face, "max_faces": d.max_faces} | self.framer.recorded()
        if d.det_nms != DET_NMS:  # journals without it were written with the default
            found["det_nms"] = d.det_nms
        if d.full_detect_every != FULL_DETECT_EVERY:  # likewise
            found["full_detect_every"] = d.full_detect_every
        return found

    def second_looks(self, s: float) -> list[tuple[float, bool, float]]:
        """:func:`second_looks` at a picture in which nothing was found at scale ``s``."""
        return [(s * m, mirrored, turn) for m, mirrored, turn in second_looks(self.settings.look_again, self.name)]

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
               back: np.ndarray | None = None, at: tuple[int, int] = (0, 0)) -> list[Face]:
        """The faces ``_detect`` finds in ``small`` (``image`` scaled by ``s``; ``mirrored``: searched
        flipped left to right; ``back``: a turned copy, with :func:`turned`'s map back; ``at``: where
        ``small`` starts in the scaled image, when it is a window of it), in ``image``'s pixels. A face
        found turned keeps its box's size, upright, about its centre mapped back."""
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
            x, y = x + at[0], y + at[1]
            marks = None if points is None else tuple(round(float(v + at[k % 2]) / s, 2) for k, v in enumerate(points))
            face = _clip([x / s, y / s, w / s, h / s], score, shape, marks)
            if face is not None and min(face.w, face.h) >= self.settings.min_face:
                faces.append(face)
        return faces

    def _detect(self, image: np.ndarray) -> list[tuple[tuple[float, ...], float | None, tuple | None]]:
        """``(box, score, landmarks)`` of each face in ``image``'s pixels; score and landmarks may be None."""
        raise NotImplementedError


class YuNetDetector(_Detector):
    """YuNet through onnxruntime (one session shared by the threads, one intra-op thread each: the
    workers are the parallelism), decoded exactly as ``cv2.FaceDetectorYN`` decodes it (:mod:`.yunet`),
    which is faster than OpenCV's DNN module (how much: ``benchmarks/detectors.py``). A YuNet file
    without the 2023+ outputs (``cls_8`` ... ``kps_32``), e.g. the 2022mar one, runs through
    ``cv2.FaceDetectorYN`` instead (``backend``: ``auto`` | ``onnxruntime`` | ``opencv``).
    ``threshold``: the score a face needs; None takes the settings' ``det_threshold``."""

    name = "yunet"

    def __init__(self, model: str | Path, threshold: float | None = None, backend: str = "auto", **kw):
        super().__init__(**kw)
        self.path = Path(model)
        self.threshold = self.settings.det_threshold if threshold is None else float(threshold)
        self._session = None if backend == "opencv" else yunet_session(self.path, required=backend == "onnxruntime")
        self.backend = "onnxruntime" if self._session is not None else "opencv"
        self._input = self._session and self._session.get_inputs()[0].name
        if self._session is None:  # fail now, not in a worker thread: OpenCV loads files it cannot run
            try:
                self._detect(np.zeros((32, 32, 3), np.uint8))
            except cv2.error as exc:
                raise ArtifactError(f"{self.path}: OpenCV cannot run this YuNet model: {_cv_error(exc)}") from exc

    def recorded(self) -> dict:
        found = super().recorded()
        nms = found.pop("det_nms", None)
        return found | {"det_threshold": self.threshold} | ({} if nms is None else {"det_nms": nms})

    def _net(self):
        net = getattr(self._local, "net", None)
        if net is None:
            try:
                net = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320), self.threshold, self.settings.det_nms,
                                                YUNET_TOP_K)
            except cv2.error as exc:
                raise ArtifactError(f"{self.path}: OpenCV cannot load this YuNet model: {_cv_error(exc)}") from exc
            self._local.net = net
        return net

    def _detect(self, image):
        if self._session is not None:
            return yunet_decode(self._session, self._input, image, self.threshold, self.settings.det_nms)
        net = self._net()
        net.setInputSize((image.shape[1], image.shape[0]))
        _, found = net.detect(image)
        return [] if found is None else [(tuple(r[:4]), float(r[14]), tuple(r[4:14])) for r in found]


#: The Haar cascade's smallest face, px at detection scale (as the ``fer`` package's 50). Each smaller
#: size adds pyramid levels at nearly full resolution, the costliest ones. Smaller faces: a larger
#: --det-size, or YuNet.
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


def open_detector(detection: DetectionSettings = DetectionSettings(), framing: Framing | None = None,
                  crops: CropSettings = CropSettings()):
    """The detector ``detection.detector`` asks for, set up as ``detection`` says; ``auto`` is YuNet (its
    file is bundled), Haar only in an install without it. ``none`` returns None (every image is
    classified whole). Its faces are framed by ``framing`` (the model's) unless ``crops.crop`` is
    ``box``, with ``crops``' views for pictures; a spread given for a model without a framing is refused."""
    if detection.detector == "none":
        return None
    if crops.crop == "box":
        framing = None
    elif framing is None and crops.crop_spread:
        raise InputError(f"--crop-spread {crops.crop_spread:g}: this model's spec has no framing, so each face is "
                         "cut out as one square around its box; drop --crop-spread, or use a model with a framing")
    path = find_yunet_model(detection.yunet_model)
    if detection.detector == "yunet" and path is None:
        raise ArtifactError(_yunet_missing())
    if path is not None and detection.detector in ("auto", "yunet"):
        return YuNetDetector(path, settings=detection, framer=Framer(framing, YuNetDetector.name, crops))
    return HaarDetector(settings=detection, framer=Framer(framing, HaarDetector.name, crops))


def _cv_error(exc: Exception) -> str:
    """OpenCV's own words for ``exc`` on one line (its message also names its source file and function)."""
    text = getattr(exc, "err", None) or str(exc)
    return " ".join(text.split())


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
