"""Batch inputs (torch-free): image and video files found under the paths a user gives, and frames.

A file given explicitly is always an input (a video by its extension, else an image, so a wrong
file gives an error row rather than vanishing); folders are searched recursively for the known
extensions. ``Source.name`` is the path as given, or ``FOLDER/relative/path`` for files found in a
folder: stable across runs, so ``--resume`` can recognise finished inputs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from .errors import InputError
from .folders import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
#: Images with both sides at most this many pixels are taken to be face crops (FER2013 crops are
#: 48x48) and are classified whole, without face detection.
CROP_MAX_SIDE = 64


@dataclass(frozen=True)
class Source:
    path: Path  # the file to read
    name: str  # what the CSV's `source` column says
    kind: str  # "image" or "video"


def kind_of(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"


def collect_sources(inputs: Sequence[str | Path]) -> list[Source]:
    """Every input file, in the order given, folders expanded recursively in sorted order.

    A path that does not exist raises :class:`InputError`; a file listed twice is kept once.
    """
    out, seen = [], set()
    for given in inputs:
        root = Path(given)
        if root.is_dir():
            found = sorted(p for p in root.rglob("*") if p.is_file()
                           and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            items = [(p, os.path.join(str(given), str(p.relative_to(root)))) for p in found]
        elif root.exists():
            items = [(root, str(given))]
        else:
            raise InputError(f"{given}: no such file or folder")
        for path, name in items:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                out.append(Source(path, name, kind_of(path)))
    return out


def is_face_crop(image: np.ndarray) -> bool:
    return max(image.shape[:2]) <= CROP_MAX_SIDE


@dataclass(frozen=True)
class FrameSampler:
    """Which video frames to use: every ``every_n``-th, or ``fps`` frames per second of video."""

    every_n: int = 1
    fps: float | None = None

    def __post_init__(self):
        if self.every_n < 1 or (self.fps is not None and self.fps <= 0):
            raise InputError(f"need every_n >= 1 and fps > 0, got every_n={self.every_n}, fps={self.fps}")

    def picks(self, video_fps: float) -> Iterator[bool]:
        """An endless stream saying, frame by frame, whether to use it."""
        step = self.every_n if self.fps is None or video_fps <= 0 else max(1.0, video_fps / self.fps)
        i, nxt = 0, 0.0
        while True:
            take = i >= nxt - 1e-9
            if take:
                nxt += step
            yield take
            i += 1


def open_video(path: str | Path):
    """An opened ``cv2.VideoCapture``, its fps and its frame count (0 when unknown)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); re-copy or remove it")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{path}: cannot open this video (corrupt, truncated or an unsupported codec)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    return cap, fps, max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))


def iter_frames(path: str | Path, sampler: FrameSampler = FrameSampler()) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame index, timestamp in s, BGR frame)`` for the sampled frames of a video.

    Frames that decode are yielded; if the video stops before the frame count its container
    declares, :class:`InputError` is raised after the last good frame (a truncated file).
    """
    cap, fps, count = open_video(path)
    try:
        i = 0
        for take in sampler.picks(fps):
            ok = cap.grab()
            if not ok:
                break
            if take:
                ok, frame = cap.retrieve()
                if not ok:
                    break
                yield i, (i / fps if fps > 0 else 0.0), frame
            i += 1
    finally:
        cap.release()
    error = decode_error(path, i, count)
    if error:
        raise InputError(error)


def decode_error(path: str | Path, decoded: int, count: int) -> str:
    """The error for a video whose decoding stopped after ``decoded`` frames of the ``count`` its
    container declares; empty when it reached the end."""
    if decoded == 0:
        return f"{path}: no frame could be decoded (corrupt or unsupported codec)"
    if count and decoded < count - 1:  # containers may round the count by one
        return f"{path}: decoding stopped at frame {decoded} of {count}; the file is truncated or corrupt"
    return ""


def count_frames(source: Source, sampler: FrameSampler) -> int:
    """How many items a source will yield (for the progress bar); 1 for images, a guess for videos."""
    if source.kind != "video":
        return 1
    try:
        cap, fps, count = open_video(source.path)
        cap.release()
    except InputError:
        return 1
    picks = sampler.picks(fps)
    return max(1, sum(next(picks) for _ in range(count)))
