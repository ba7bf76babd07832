"""The named parts of a batch run's settings, each frozen, validated when made, and taken whole by
the stage that uses it: :class:`DetectionSettings` by the detector (:func:`.faces.open_detector`),
:class:`CropSettings` by the framing of faces, :class:`SamplingSettings` by the video reader and
:class:`ModelSettings` by the classifier. Every default and every rule between two options lives
here, once; :mod:`.config` puts the parts together into a run, and the CLI reads its defaults from
them.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

from ..errors import InputError
from ..runtime import DEFAULT_BATCH_SIZE, PROVIDERS

DETECTORS = ("auto", "yunet", "haar", "none")
#: Long sides (px) an image is downscaled to for detection. YuNet misses very large close-up faces at
#: full resolution, and its cost grows with the pixels; add 1280 for crowds of small faces.
DET_SIZES = (640,)
#: A picture (not a video frame) without a face found at DET_SIZES is searched again at this many times
#: the scale, then (YuNet) halfway between, each as it is and mirrored, then turned by 30 degrees either
#: way at 1x and halfway (:func:`.faces.second_looks`): small, blurred and tilted faces are often found
#: then. How many more faces each look finds: benchmarks/README.md, "pictures.py".
LOOK_AGAIN = 2.0
#: Lowest YuNet score threshold accepted: below it, textures become "faces" by the hundred.
MIN_DET_THRESHOLD = 0.1
#: Smallest long side (px) a detection scale may have.
MIN_DET_SIZE = 64
#: Largest: an image is only ever scaled down to a detection size, but a picture without a face is
#: searched again at up to 4x (LOOK_AGAIN's bound), so this bounds the pixels of a second look.
MAX_DET_SIZE = 4096
#: Two face boxes that overlap by more than this intersection-over-union are one face: the higher
#: scored box is kept. YuNet proposes several boxes around each face, and detecting at several sizes
#: finds a face once per size; OpenCV's own YuNet decoder merges at this overlap.
DET_NMS = 0.3
#: A video's whole frame is searched for faces every this many sampled frames (so a face that enters is
#: found within as many); in between, each face is searched for around its last box, at a fraction of
#: the cost (:mod:`.follow`). Dask's ranges of frames are whole multiples of it, so that they start
#: where one pass would search the whole frame anyway. The default searches every frame: a face found
#: around its last box gets a slightly different box and framing, which changes the emotion of a few
#: percent of rows (benchmarks/results/video_tracking.json), so following is asked for, not assumed.
FULL_DETECT_EVERY = 1
#: How a detected face is cropped: ``auto`` as the model's spec frames faces (else ``box``), ``box`` a
#: square around the detector's box with a 10 % margin.
CROPS = ("auto", "box")
#: A face in a picture (not a video frame) cropped with the model's framing is also classified at
#: (1 - CROP_SPREAD) and (1 + CROP_SPREAD) times the framed side, and the three answers averaged: no box
#: rule predicts each training crop's framing, and this is how much FER2013's crops vary about YuNet's
#: box (training.face_template's ``box_std``, as a share of the box's side). Video frames keep one crop,
#: for speed: a track is read over many frames. What it gains: benchmarks/README.md, "Face framing".
CROP_SPREAD = 0.22
#: Most video frames per second that may be asked for: beyond any video's rate, --video-fps samples
#: every frame, and a clock this fast still counts its ticks in whole numbers.
MAX_VIDEO_FPS = 1000.0
#: Largest crop spread accepted (a view half the framed side, or one and a half times it).
MAX_CROP_SPREAD = 0.5
#: Largest batch size accepted. The model's working memory grows with the crops of one call, and each
#: worker classifies its own runs of images in calls of this size: a larger batch runs no faster on a
#: CPU, and only risks running out of memory.
MAX_BATCH_SIZE = 4096


@dataclass(frozen=True, kw_only=True)
class DetectionSettings:
    """How faces are found: the detector, its file, and what it keeps."""

    detector: str = "auto"  # auto (YuNet, bundled; Haar only if its file is missing) | yunet | haar | none
    yunet_model: str | None = None  # YuNet .onnx; None = $FER_YUNET_MODEL, the user cache or the bundled file
    det_threshold: float = 0.7  # YuNet score threshold
    det_sizes: tuple[int, ...] = DET_SIZES  # long sides (px) images are scaled to for detection
    det_nms: float = DET_NMS  # boxes overlapping by more than this IoU are merged into one face
    look_again: float = LOOK_AGAIN  # a picture without a face found is searched again at this x scale; 1 = off
    min_face: int = 20  # faces whose box is smaller (source px, shorter side) are ignored
    max_faces: int | None = None  # keep at most this many faces per image or frame, the largest; None = all
    full_detect_every: int = FULL_DETECT_EVERY  # videos: the whole frame searched every K sampled frames (and on a
    # lost face or a scene cut), each face followed around its last box in between; 1 = the whole of every frame

    def __post_init__(self):
        if self.yunet_model is not None:  # paths travel as strings: hashable, picklable
            object.__setattr__(self, "yunet_model", str(self.yunet_model))
        sizes = self.det_sizes
        if isinstance(sizes, (int, float)) and not isinstance(sizes, bool):
            sizes = (sizes,)  # one size given alone
        if isinstance(sizes, (str, bytes)) or not all(_is_whole(s) for s in sizes):
            raise InputError(f"det_sizes must be whole numbers of pixels, e.g. (640,), got {self.det_sizes!r}")
        object.__setattr__(self, "det_sizes", tuple(int(s) for s in sizes))
        _numbers(self, ("det_threshold", "det_nms", "look_again"))
        whole_numbers(self, ("min_face", "max_faces", "full_detect_every"))
        p = []
        if self.detector not in DETECTORS:
            p.append(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if not MIN_DET_THRESHOLD <= self.det_threshold <= 1:
            p.append(f"detection threshold must be in [{MIN_DET_THRESHOLD}, 1], got {self.det_threshold}")
        if not self.det_sizes or min(self.det_sizes) < MIN_DET_SIZE:
            p.append(f"detection sizes must be at least {MIN_DET_SIZE} px, got {list(self.det_sizes)}")
        elif max(self.det_sizes) > MAX_DET_SIZE:
            p.append(f"detection sizes must be at most {MAX_DET_SIZE} px, got {list(self.det_sizes)}")
        if not 0 <= self.det_nms < 1:
            p.append(f"detection NMS overlap must be in [0, 1) (0 = overlapping boxes are one face), got {self.det_nms}")
        if not 1 <= self.look_again <= 4:
            p.append(f"look again must be in [1, 4] (1 = off), got {self.look_again}")
        if self.min_face < 0:
            p.append(f"min face must be >= 0, got {self.min_face}")
        if self.max_faces is not None and self.max_faces < 1:
            p.append(f"max faces must be at least 1, got {self.max_faces}")
        if self.full_detect_every < 1:
            p.append(f"full detect every must be at least 1 (1 = every frame), got {self.full_detect_every}")
        raise_problems(p)


@dataclass(frozen=True, kw_only=True)
class CropSettings:
    """How a found face is cut out for the model, and in how many views."""

    crop: str = "auto"  # auto (as the model's spec frames faces, else box) | box (a square around the box, 10 % margin)
    crop_spread: float | None = None  # pictures: framed faces also seen this much wider and tighter; 0 = one crop;
    # None = CROP_SPREAD for framed crops. Given with crop="box", which has one crop per face, it is refused

    def __post_init__(self):
        _numbers(self, ("crop_spread",))
        p = []
        if self.crop not in CROPS:
            p.append(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.crop_spread is not None and not 0 <= self.crop_spread <= MAX_CROP_SPREAD:
            p.append(f"crop spread must be in [0, {MAX_CROP_SPREAD}] (0 = one crop), got {self.crop_spread}")
        elif self.crop == "box" and self.crop_spread:
            p.append(f"--crop-spread {self.crop_spread:g} applies to framed crops, and --crop box cuts one square per "
                     "face: drop --crop-spread, or use --crop auto")
        raise_problems(p)

    @property
    def spread(self) -> float:
        """The spread in use: as given, else CROP_SPREAD for framed crops and 0 for box crops."""
        if self.crop_spread is not None:
            return self.crop_spread
        return 0.0 if self.crop == "box" else CROP_SPREAD


@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """Which frames of a video are read: every n-th, or so many per second."""

    every_n: int | None = None  # use every n-th video frame; None = every frame (or video_fps)
    video_fps: float | None = None  # or: this many frames per second of video

    def __post_init__(self):
        _numbers(self, ("video_fps",))
        whole_numbers(self, ("every_n",))
        p = []
        if self.every_n is not None and self.video_fps is not None:
            p.append("use either --every-n or --video-fps, not both")
        if self.every_n is not None and self.every_n < 1:
            p.append(f"every n must be at least 1, got {self.every_n}")
        if self.video_fps is not None and not 0 < self.video_fps <= MAX_VIDEO_FPS:
            p.append(f"video fps must be positive and at most {MAX_VIDEO_FPS:g}, got {self.video_fps}")
        raise_problems(p)


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """Which emotion model classifies the faces, where and how."""

    model: str | None = None  # exported ONNX model, or a bundled one by name (accurate, fast); None = the default
    # bundled one. Names resolve in the process that loads the model (each Dask worker: its own install)
    provider: str = "auto"  # onnxruntime provider: auto | cpu | cuda
    self_check: bool = True  # check the model on this machine when it opens (fer_export.probe); False runs a
    # file that fails its check anyway (a bundled model that fails falls back to a correct path either way)
    batch_size: int = DEFAULT_BATCH_SIZE  # face crops per model call, gathered across files and frames
    threads: int | None = None  # onnxruntime intra-op threads for video frames; None = half the CPUs with Haar, else all
    # (runs of images are classified by each worker thread on a one-thread session the workers share)

    def __post_init__(self):
        if self.model is not None:
            object.__setattr__(self, "model", str(self.model))
        if not isinstance(self.self_check, bool):
            raise InputError(f"self_check must be True or False, got {self.self_check!r}")
        whole_numbers(self, ("batch_size", "threads"))
        p = []
        if self.provider not in PROVIDERS:
            p.append(f"provider must be one of {PROVIDERS}, got {self.provider!r}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            p.append(f"batch size must be 1 to {MAX_BATCH_SIZE} (the model's memory grows with it), got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            p.append(f"threads must be at least 1, got {self.threads}")
        raise_problems(p)


#: The parts of a run's work, by the name :class:`~.config.WorkConfig` gives each.
PARTS = {"model": ModelSettings, "detection": DetectionSettings, "crops": CropSettings, "sampling": SamplingSettings}
#: Each flat option (``det_threshold``, ``every_n``, ...) and the part that owns it.
OWNER = {f.name: part for part, cls in PARTS.items() for f in fields(cls)}


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _numbers(settings, names: tuple[str, ...]) -> None:
    """Fields that must be real numbers (or None), stored as floats. Each has a range, written so that
    NaN (which compares False with every bound) and infinities fall outside it."""
    for name in names:
        value = getattr(settings, name)
        if value is not None and (isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real)):
            raise InputError(f"{name} must be a number, got {value!r}")
        if value is not None:
            object.__setattr__(settings, name, float(value))


def whole_numbers(settings, names: tuple[str, ...]) -> None:
    """Fields that must be whole numbers (or None): an API caller's "32" or 2.5 is refused, not half-used."""
    for name in names:
        value = getattr(settings, name)
        if value is not None and not _is_whole(value):
            raise InputError(f"{name} must be a whole number, got {value!r}")
        if value is not None:
            object.__setattr__(settings, name, int(value))


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise InputError("; ".join(problems))
