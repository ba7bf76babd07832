"""What a batch run is asked to do: one frozen config that owns every default and every either/or rule.

:class:`WorkConfig` is what turns one input into faces and probabilities (model, provider, detector,
frame sampling); it is all a Dask worker receives, and, being hashable, the key under which a
worker keeps its loaded model. :class:`BatchConfig` adds what one run reads and writes. Both are
validated once, when they are made, so a Python caller meets the same rules as the CLI, which
reads its defaults from here.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from ..runtime import DEFAULT_BATCH_SIZE, PROVIDERS

DETECTORS = ("auto", "yunet", "haar", "none")
#: Long sides (px) an image is downscaled to for detection. YuNet misses very large close-up faces
#: at full resolution and costs ~5x more at 1280 than at 640; add 1280 for crowds of small faces.
DET_SIZES = (640,)
#: A picture (not a video frame) without a face found at DET_SIZES is searched again at this many times
#: the scale, then (YuNet) halfway between, each as it is and mirrored, then turned by 30 degrees either
#: way at 1x and halfway (faces.second_looks): small, blurred and tilted faces are often found then.
#: How many more faces each look finds: benchmarks/README.md, "pictures.py".
LOOK_AGAIN = 2.0
#: Lowest YuNet score threshold accepted: below it, textures become "faces" by the hundred.
MIN_DET_THRESHOLD = 0.1
#: Smallest long side (px) a detection scale may have.
MIN_DET_SIZE = 64
#: How a detected face is cropped: ``auto`` as the model's spec frames faces (else ``box``), ``box`` a
#: square around the detector's box with a 10 % margin.
CROPS = ("auto", "box")
#: A face in a picture (not a video frame) cropped with the model's framing is also classified at
#: (1 - CROP_SPREAD) and (1 + CROP_SPREAD) times the framed side, and the three answers averaged: no box
#: rule predicts each training crop's framing, and this is how much FER2013's crops vary about YuNet's
#: box (training.face_template's ``box_std``, as a share of the box's side). Video frames keep one crop
#: (speed; a track is read over many frames). What it gains: benchmarks/README.md, "Three views".
CROP_SPREAD = 0.22
def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one, else every CPU)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: Decode/detect threads of the local runner.
DEFAULT_WORKERS = min(4, usable_cpus())


@dataclass(frozen=True, kw_only=True)
class WorkConfig:
    """How each input is turned into rows: the model, the detector and the frames to use."""

    model: str | None = None  # exported ONNX model, or a bundled one by name (accurate, fast); None = the default
    # bundled one. Names resolve in the process that loads the model (each Dask worker: its own install)
    provider: str = "auto"  # onnxruntime provider: auto | cpu | cuda
    self_check: bool = True  # check the model on this machine when it opens (fer_export.probe); False runs a
    # file that fails its check anyway (a bundled model that fails falls back to a correct path either way)
    batch_size: int = DEFAULT_BATCH_SIZE  # face crops per model call, gathered across files and frames
    threads: int | None = None  # onnxruntime intra-op threads for video frames; None = half the CPUs with Haar, else all
    # (runs of images are classified by each worker thread on a one-thread session the workers share)
    detector: str = "auto"  # auto (YuNet, bundled; Haar only if its file is missing) | yunet | haar | none
    yunet_model: str | None = None  # YuNet .onnx; None = $FER_YUNET_MODEL, the user cache or the bundled file
    det_threshold: float = 0.7  # YuNet score threshold
    det_sizes: tuple[int, ...] = DET_SIZES  # long sides (px) images are scaled to for detection
    look_again: float = LOOK_AGAIN  # a picture without a face found is searched again at this x scale; 1 = off
    min_face: int = 20  # faces whose box is smaller (source px, shorter side) are ignored
    max_faces: int | None = None  # keep at most this many faces per image or frame, the largest; None = all
    crop: str = "auto"  # auto (as the model's spec frames faces, else box) | box (a square around the box, 10 % margin)
    crop_spread: float = CROP_SPREAD  # pictures: framed faces also seen this much wider and tighter; 0 = one crop
    every_n: int | None = None  # use every n-th video frame; None = every frame (or --video-fps)
    video_fps: float | None = None  # or: this many frames per second of video

    def __post_init__(self):
        for name in ("model", "yunet_model"):  # paths travel as strings: hashable, picklable
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        sizes = self.det_sizes
        if isinstance(sizes, (int, float)) and not isinstance(sizes, bool):
            sizes = (sizes,)  # one size given alone
        if isinstance(sizes, (str, bytes)) or not all(_is_whole(s) for s in sizes):
            raise InputError(f"det_sizes must be whole numbers of pixels, e.g. (640,), got {self.det_sizes!r}")
        object.__setattr__(self, "det_sizes", tuple(int(s) for s in sizes))
        for name in ("det_threshold", "look_again", "crop_spread", "video_fps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real)):
                raise InputError(f"{name} must be a number, got {value!r}")
            if value is not None:
                object.__setattr__(self, name, float(value))
        if not isinstance(self.self_check, bool):
            raise InputError(f"self_check must be True or False, got {self.self_check!r}")
        _whole_numbers(self, ("batch_size", "threads", "min_face", "max_faces", "every_n"))
        _raise(_work_problems(self))


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """One batch run: its inputs, its outputs and how it treats an earlier run's results."""

    inputs: tuple[Path, ...]  # files and folders (searched recursively)
    out: Path  # results CSV
    work: WorkConfig = field(default_factory=WorkConfig)  # what each input goes through
    workers: int = DEFAULT_WORKERS  # local decode/detect threads
    resume: bool = False  # continue an interrupted run writing to `out`
    overwrite: bool = False  # replace an existing `out`
    summary: Path | None = None  # per-input (and per-track) summary CSV
    annotate: Path | None = None  # folder for copies with boxes and labels drawn
    plots: Path | None = None  # folder for emotion-over-time plots of videos
    progress: bool | None = None  # tqdm bar; None = only on a terminal

    def __post_init__(self):
        if isinstance(self.out, str) and self.out.endswith(("/", os.sep)):  # Path() would drop the slash
            raise InputError(f"--out {self.out} names a folder; give the results file's name, e.g. {self.out}results.csv")
        inputs = (self.inputs,) if isinstance(self.inputs, (str, bytes, os.PathLike)) else self.inputs
        object.__setattr__(self, "inputs", tuple(Path(os.fsdecode(p)) for p in inputs))
        for name in ("resume", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise InputError(f"progress must be True, False or None, got {self.progress!r}")
        _whole_numbers(self, ("workers",))
        for name in ("out", "summary", "annotate", "plots"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _through_link(Path(value)))
        _raise(_batch_problems(self))

    @classmethod
    def build(cls, inputs: Sequence[str | Path] | str | Path, out: str | Path, **options: Any) -> "BatchConfig":
        """A config from flat options (the CLI's, or a caller's): each goes to the part that owns it.
        Options given as None keep their default."""
        work_names = {f.name for f in fields(WorkConfig)}
        given = {k: v for k, v in options.items() if v is not None}
        unknown = set(given) - work_names - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"unknown batch options {sorted(unknown)}")
        work = WorkConfig(**{k: v for k, v in given.items() if k in work_names})
        return cls(inputs=inputs, out=out, work=work,
                   **{k: v for k, v in given.items() if k not in work_names})


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _whole_numbers(config, names: tuple[str, ...]) -> None:
    """Fields that must be whole numbers (or None): an API caller's "32" or 2.5 is refused, not half-used."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not _is_whole(value):
            raise InputError(f"{name} must be a whole number, got {value!r}")
        if value is not None:
            object.__setattr__(config, name, int(value))


def _through_link(path: Path) -> Path:
    """``path``, or where it points when it is a symbolic link: the lock, the journal and the writes
    then all belong to the one file, however it is named (two runs, one through a link, would
    otherwise write the same CSV under two locks)."""
    try:
        return Path(os.path.realpath(path)) if path.is_symlink() else path
    except OSError:  # a name too long to look up: check_outputs reports it
        return path


def _raise(problems: list[str]) -> None:
    if problems:
        raise InputError("; ".join(problems))


def _work_problems(c: WorkConfig) -> list[str]:
    p = []
    if c.provider not in PROVIDERS:
        p.append(f"provider must be one of {PROVIDERS}, got {c.provider!r}")
    if c.detector not in DETECTORS:
        p.append(f"detector must be one of {DETECTORS}, got {c.detector!r}")
    if c.batch_size < 1:
        p.append(f"batch size must be at least 1, got {c.batch_size}")
    if c.threads is not None and c.threads < 1:
        p.append(f"threads must be at least 1, got {c.threads}")
    if not MIN_DET_THRESHOLD <= c.det_threshold <= 1:
        p.append(f"detection threshold must be in [{MIN_DET_THRESHOLD}, 1], got {c.det_threshold}")
    if not c.det_sizes or min(c.det_sizes) < MIN_DET_SIZE:
        p.append(f"detection sizes must be at least {MIN_DET_SIZE} px, got {list(c.det_sizes)}")
    if not 1 <= c.look_again <= 4:
        p.append(f"look again must be in [1, 4] (1 = off), got {c.look_again}")
    if c.min_face < 0:
        p.append(f"min face must be >= 0, got {c.min_face}")
    if c.max_faces is not None and c.max_faces < 1:
        p.append(f"max faces must be at least 1, got {c.max_faces}")
    if c.crop not in CROPS:
        p.append(f"crop must be one of {CROPS}, got {c.crop!r}")
    if not 0 <= c.crop_spread <= 0.5:
        p.append(f"crop spread must be in [0, 0.5] (0 = one crop), got {c.crop_spread}")
    if c.every_n is not None and c.video_fps is not None:
        p.append("use either --every-n or --video-fps, not both")
    if c.every_n is not None and c.every_n < 1:
        p.append(f"every n must be at least 1, got {c.every_n}")
    if c.video_fps is not None and not c.video_fps > 0:
        p.append(f"video fps must be positive, got {c.video_fps}")
    return p


def _batch_problems(c: BatchConfig) -> list[str]:
    p = []
    if not c.inputs:
        p.append("no inputs given")
    if c.resume and c.overwrite:
        p.append("use either --resume or --overwrite, not both")
    if c.workers < 1:
        p.append(f"workers must be at least 1, got {c.workers}")
    return p


#: The defaults, for help texts.
WORK_DEFAULTS = WorkConfig()
